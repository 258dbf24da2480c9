package cloudsim

// Cross-file contract of the emulator. Each function here is implemented in the
// file named beside it; this file only documents the seams so the provider
// files and the world can be written side by side.
//
// Operation names used for call counting and fault injection:
//   Cloudflare: "cf.<resource>.<verb>", e.g. cf.tunnel.create, cf.tunnel.list,
//               cf.tunnel.get, cf.tunnel.delete, cf.tunnel_config.get,
//               cf.tunnel_config.put, cf.tunnel_token.get, cf.tunnel_connections.get,
//               cf.tunnel_connections.delete, cf.dns.create, cf.dns.list, cf.dns.get,
//               cf.dns.update, cf.dns.patch, cf.dns.delete
//   EC2:        "ec2.<Action>", e.g. ec2.RunInstances, ec2.DescribeInstances
//   SSM:        "ssm.<Operation>", e.g. ssm.PutParameter, ssm.GetParameter
//
// Every emulated request, before taking s.mu:
//   f := s.injectFaultIn(r.Context(), op, scope) // faults.go: latency, hangs, errors, rate limits
//   (scope: EC2, SSM and STS the request's region, their rate limits are per region;
//   Cloudflare the API token, its budget is per token, "" for tokens no identity has)
//   if f.Kind != FaultNone { render provider-specific error; s.countCall(op, status); return }
// and after answering: s.countCall(op, status)                       // calls.go
// f.Status is already the provider's status: FaultError 5xx (rule's, default 500);
// FaultThrottle 429 for cf.* (with f.RetryAfter), 503 for ec2.* (RequestLimitExceeded),
// 400 for ssm.* (ThrottlingException). FaultHang: the client is gone, write nothing,
// count status 0. Provider rate limits (RateLimits in Config / /_sim/faults) come out
// of injectFault as FaultThrottle too.
//
// World hooks (world.go), called with s.mu held:
//   s.instanceRunning(inst)     // instance reached running: start simulated cloudflared
//   s.instanceDown(inst)        // instance stopping/terminating: its connector drops
//   s.runShellScript(inst, cmds) (stdout string, exitCode int32)
//                               // AWS-RunShellScript on an instance; understands
//                               // `systemctl restart cloudflared` and curl of /ready
//
// EC2 helpers (ec2.go), called with s.mu held, used by the world and /_sim/world:
//   s.stopInstanceLocked(inst)       // running -> stopping -> stopped (calls instanceDown)
//   s.terminateInstanceLocked(inst)  // -> shutting-down -> terminated (calls instanceDown)
//
// Regions: EC2 and SSM requests act in the region of their SigV4 credential
// scope (verifySigV4 returns it; it is always one of Config.Regions). Every
// Instance, Parameter and Command records its region; s.regionOf(inst) reads
// an instance's ("" = home region), s.params is keyed by (region, name),
// s.clientToks by (region, token). Instance ids and command ids are unique
// across regions, so s.instances and s.commands stay keyed by id and every
// lookup checks the region. Cloudflare has no region.
//
// Cloudflare identities (cf_identity.go): s.cf, built by New and read-only,
// maps each API token to the accounts and zones it reaches, each zone to its
// name and account. Every Tunnel names its account (AccountTag) and every
// DNSRecord its zone (ZoneID); the handlers take the account or zone of the
// path (s.cfTunnel(account, id), s.cfRecord(zone, id)) and see nothing else.
//
// Ownership conventions the invariant checker relies on (tunnelward's, written
// down here because the emulator may not import tunnelward's code):
//   tunnel name        "tw-<org_id>"
//   DNS record comment "tunnelward:org=<org_id>" (exact prefix; more may follow after a space)
//   EC2 tags           ManagedBy=tunnelward, OrgID=<org_id>, TunnelID=<tunnel id>
//   SSM parameter      tags ManagedBy=tunnelward, OrgID=<org_id>; name "<prefix>/<org_id>/tunnel-token"
//   user-data          names the token parameter on a line  TUNNEL_TOKEN_PARAMETER='<name>'
//   tunnel token       base64(JSON {"a":account_tag,"t":tunnel_id,"s":secret}), as Cloudflare's
//
// Public Go API beside Handler() (tests and the reconciler's sandbox use these):
//   Calls(), CallCount(op), ResetCalls()            // calls.go
//   FaultSettings(), SetFaultSettings(fs)           // faults.go
//   ApplyWorld(WorldAction), State(), Tick()        // world.go, simhttp.go, sim.go
//   CheckInvariants(orgs)                           // invariants.go (nil orgs: structural only)
//   Regions(), InstanceARN(id), Config.Validate()   // sim.go, world.go
//   Config.CFIdentities(), LoadTunnelIn(account, name) // cf_identity.go, preload.go
//   TunnelToken(t), TokenParameterOf(userData)      // cf.go, world.go
//   OpenFile(cfg, path), Restore(cfg, data), Snapshot(), SaveFile(path),
//   StartAutosave(path, window, onError), Counts()  // persist.go
