package deploy

import (
	"bufio"
	"context"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"

	"github.com/tunnelward/tunnelward/internal/config"
	"github.com/tunnelward/tunnelward/internal/metrics"
)

// repoRoot is the module root, two levels up from nothing: deploy/ sits
// directly under it.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("no go.mod at %s", root)
	}
	return root
}

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	root := repoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  root,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(root, "compose.yaml")}},
		Environment: types.Mapping{}, // nothing from the test's environment leaks in
	}, func(o *loader.Options) { o.SetProjectName("tunnelward", true) })
	if err != nil {
		t.Fatalf("compose.yaml does not load: %v", err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return s
}

// flagValue returns the value after a flag in a command line (-f v or -f=v).
func flagValue(cmd []string, names ...string) (string, bool) {
	for i, a := range cmd {
		for _, n := range names {
			if a == n && i+1 < len(cmd) {
				return cmd[i+1], true
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v, true
			}
		}
	}
	return "", false
}

// publishes reports whether the service publishes container port target.
func publishes(s types.ServiceConfig, target int) bool {
	for _, p := range s.Ports {
		if int(p.Target) == target && p.Published != "" {
			return true
		}
	}
	return false
}

func hasVolumeAt(s types.ServiceConfig, target string) bool {
	for _, v := range s.Volumes {
		if v.Target == target && v.Type == types.VolumeTypeVolume {
			return true
		}
	}
	return false
}

func port(t *testing.T, hostport string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("%q: %v", hostport, err)
	}
	return n
}

// goModVersion returns the version go.mod requires of a module, or the go
// directive for "go".
func goModVersion(t *testing.T, module string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+v?([0-9][^\s]*)`)
	if module == "go" {
		re = regexp.MustCompile(`(?m)^go\s+([0-9.]+)`)
	}
	m := re.FindSubmatch(b)
	if m == nil {
		t.Fatalf("go.mod has no %s", module)
	}
	return string(m[1])
}

func TestComposeServices(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"nats", "cloudsim", "reconciler", "prometheus"} {
		service(t, p, name)
	}
}

func TestComposeNATS(t *testing.T) {
	p := loadCompose(t)
	nats := service(t, p, "nats")
	img, tag, ok := strings.Cut(nats.Image, ":")
	if !ok || img != "nats" || tag == "latest" {
		t.Fatalf("nats image %q: want the official image at a pinned tag", nats.Image)
	}
	// The server in compose is the one the reconciler embeds and is tested with.
	want := goModVersion(t, "github.com/nats-io/nats-server/v2")
	if strings.TrimSuffix(tag, "-alpine") != want {
		t.Errorf("nats image tag %q, want %s (go.mod's nats-server)", tag, want)
	}
	cmd := []string(nats.Command)
	if !slices.Contains(cmd, "-js") && !slices.Contains(cmd, "--jetstream") {
		t.Errorf("nats command %v does not enable JetStream", cmd)
	}
	sd, ok := flagValue(cmd, "-sd", "--store_dir")
	if !ok {
		t.Fatalf("nats command %v sets no JetStream store dir", cmd)
	}
	if !hasVolumeAt(nats, sd) {
		t.Errorf("JetStream store %s is not on a named volume; streams would not survive a restart", sd)
	}
	mon, ok := flagValue(cmd, "-m", "--http_port")
	if !ok {
		t.Fatalf("nats command %v enables no monitoring port", cmd)
	}
	monPort, _ := strconv.Atoi(mon)
	for _, pt := range []int{4222, monPort} {
		if !publishes(nats, pt) {
			t.Errorf("nats does not publish port %d", pt)
		}
	}
	if nats.HealthCheck == nil || !strings.Contains(strings.Join(nats.HealthCheck.Test, " "), ":"+mon+"/healthz") {
		t.Errorf("nats healthcheck should ask the monitoring port's /healthz")
	}
}

func TestComposeBuilds(t *testing.T) {
	p := loadCompose(t)
	stages := dockerfileStages(t)
	for _, name := range []string{"cloudsim", "reconciler"} {
		s := service(t, p, name)
		if s.Build == nil {
			t.Fatalf("%s is not built from the repo", name)
		}
		if st, err := os.Stat(s.Build.Context); err != nil || !st.IsDir() {
			t.Errorf("%s build context %s: not a directory", name, s.Build.Context)
		}
		df := s.Build.Dockerfile
		if !filepath.IsAbs(df) {
			df = filepath.Join(s.Build.Context, df)
		}
		if _, err := os.Stat(df); err != nil {
			t.Errorf("%s Dockerfile: %v", name, err)
		}
		if !slices.Contains(stages, s.Build.Target) {
			t.Errorf("%s builds target %q; the Dockerfile has stages %v", name, s.Build.Target, stages)
		}
	}
}

func TestComposeReconciler(t *testing.T) {
	p := loadCompose(t)
	rec := service(t, p, "reconciler")
	known := config.EnvVars()
	for k, v := range rec.Environment {
		if !slices.Contains(known, k) {
			t.Errorf("reconciler sets %s, which the reconciler does not read", k)
		}
		if v == nil {
			t.Errorf("reconciler passes %s through from the host; set it explicitly", k)
		}
	}
	env, _ := reconcilerEnv(t, p)
	for _, tok := range []string{config.EnvCloudflareAPIToken, config.EnvAdminToken} {
		if env[tok] != "" {
			t.Errorf("compose.yaml must not carry %s; tokens come from secrets", tok)
		}
	}
	// The environment must be a configuration the reconciler accepts.
	cfg, err := config.Parse(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatalf("reconciler's compose environment is rejected: %v", err)
	}

	// --cloud points at the cloudsim service, on the port cloudsim listens on.
	if cfg.Cloud != config.ModeURL {
		t.Fatalf("reconciler runs with --cloud %s, want the cloudsim service's URL", cfg.Cloud)
	}
	cu, _ := url.Parse(cfg.CloudURL)
	cloudsim := service(t, p, "cloudsim")
	listen, ok := flagValue([]string(cloudsim.Command), "--listen", "-listen")
	if !ok {
		t.Fatal("cloudsim command sets no --listen")
	}
	if h, _, _ := net.SplitHostPort(listen); h != "0.0.0.0" && h != "" {
		t.Errorf("cloudsim listens on %s: unreachable from other containers", listen)
	}
	if cu.Hostname() != "cloudsim" || cu.Port() != strconv.Itoa(port(t, listen)) {
		t.Errorf("--cloud %s does not reach cloudsim listening on %s", cfg.CloudURL, listen)
	}
	if !publishes(cloudsim, port(t, listen)) {
		t.Errorf("cloudsim's port %d is not published (operators read /_sim/ there)", port(t, listen))
	}

	// NATS: the external server, on the port the nats service publishes.
	if cfg.NATS.Embedded() {
		t.Fatal("reconciler would run an embedded NATS server beside the nats service")
	}
	// A comma-separated list: every server of the NATS cluster, each a nats
	// service on its client port (the nats service's, published).
	for _, u := range strings.Split(cfg.NATS.URL, ",") {
		nu, err := url.Parse(strings.TrimSpace(u))
		if err != nil {
			t.Fatalf("--nats-url entry %q: %v", u, err)
		}
		ns, ok := p.Services[nu.Hostname()]
		if !ok || !strings.HasPrefix(ns.Image, "nats:") {
			t.Errorf("--nats-url entry %s does not name a nats service", u)
			continue
		}
		np, _ := strconv.Atoi(nu.Port())
		if np == 0 {
			np = 4222
		}
		if np != 4222 {
			t.Errorf("--nats-url entry %s: nats services take clients on 4222", u)
		}
	}
	if !publishes(service(t, p, "nats"), 4222) {
		t.Errorf("the nats service does not publish its client port 4222")
	}

	// Admin: listening on all interfaces inside the container, and published.
	if h, _, _ := net.SplitHostPort(cfg.AdminListen); h != "0.0.0.0" && h != "" {
		t.Errorf("--admin-listen %s is unreachable from outside the container", cfg.AdminListen)
	}
	if !publishes(rec, port(t, cfg.AdminListen)) {
		t.Errorf("admin port %d is not published", port(t, cfg.AdminListen))
	}
	// ... and so protected by a token, not opened with --admin-insecure.
	if cfg.Admin.Token.IsZero() || cfg.Admin.Insecure {
		t.Errorf("the admin API leaves the container: it needs a token (TUNNELWARD_ADMIN_TOKEN_FILE), not --admin-insecure")
	}
	// State survives a container restart.
	if !hasVolumeAt(rec, cfg.DataDir) {
		t.Errorf("--data-dir %s is not on a named volume", cfg.DataDir)
	}
	for _, dep := range []string{"nats", "cloudsim"} {
		if _, ok := rec.DependsOn[dep]; !ok {
			t.Errorf("reconciler does not depend on %s", dep)
		}
	}
}

func TestComposePrometheus(t *testing.T) {
	p := loadCompose(t)
	prom := service(t, p, "prometheus")
	if strings.HasSuffix(prom.Image, ":latest") || !strings.Contains(prom.Image, ":") {
		t.Errorf("prometheus image %q is not pinned", prom.Image)
	}
	cfgFile, _ := flagValue([]string(prom.Command), "--config.file")
	// Map the container path back to the repo through the bind mount.
	var hostFile string
	for _, v := range prom.Volumes {
		if v.Type == types.VolumeTypeBind && strings.HasPrefix(cfgFile, v.Target+"/") {
			hostFile = filepath.Join(v.Source, strings.TrimPrefix(cfgFile, v.Target+"/"))
		}
	}
	if hostFile == "" {
		t.Fatalf("prometheus config %q is not mounted from the repo", cfgFile)
	}
	var pc struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			MetricsPath   string `yaml:"metrics_path"`
			Authorization struct {
				Type            string `yaml:"type"`
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, hostFile, &pc)
	env, tokenSecret := reconcilerEnv(t, p)
	cfg, err := config.Parse(nil, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	// The token file Prometheus sends is the secret the reconciler reads.
	promToken := map[string]bool{}
	for _, sec := range prom.Secrets {
		if sec.Source == tokenSecret {
			promToken[secretPath(sec)] = true
			if sec.Mode == nil || *sec.Mode != 0o444 {
				t.Errorf("prometheus mounts secret %q without mode 0444; the non-root prometheus could not read it", sec.Source)
			}
		}
	}
	want := "reconciler:" + strconv.Itoa(port(t, cfg.AdminListen))
	found := false
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			if !slices.Contains(st.Targets, want) || (sc.MetricsPath != "" && sc.MetricsPath != "/metrics") {
				continue
			}
			found = true
			if cfg.Admin.Token.IsZero() || cfg.Admin.MetricsPublic {
				continue
			}
			a := sc.Authorization
			if (a.Type != "" && a.Type != "Bearer") || !promToken[a.CredentialsFile] {
				t.Errorf("prometheus scrapes %s/metrics with authorization %+v; /metrics needs the admin token: "+
					"type Bearer, credentials_file at the mount of secret %q (mounted at %v)", want, a, tokenSecret, promToken)
			}
		}
	}
	if !found {
		t.Errorf("prometheus does not scrape %s/metrics", want)
	}
	// Every rule file exists in the mounted directory and names only metrics
	// tunnelward exports.
	exported := exportedMetricNames(t)
	re := regexp.MustCompile(`\btunnelward_[a-z_]+`)
	for _, rf := range pc.RuleFiles {
		host := filepath.Join(filepath.Dir(hostFile), filepath.Base(rf))
		var rules struct {
			Groups []struct {
				Rules []struct {
					Alert string `yaml:"alert"`
					Expr  string `yaml:"expr"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		readYAML(t, host, &rules)
		n := 0
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				n++
				for _, name := range re.FindAllString(r.Expr, -1) {
					if !exported[name] {
						t.Errorf("alert %s uses %s, which tunnelward does not export", r.Alert, name)
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s holds no rules", host)
		}
	}
}

// secretPath is where compose mounts a service's secret in its container.
func secretPath(s types.ServiceSecretConfig) string {
	switch {
	case s.Target == "":
		return "/run/secrets/" + s.Source
	case strings.HasPrefix(s.Target, "/"):
		return s.Target
	}
	return "/run/secrets/" + s.Target
}

// composeAdminToken stands in for the token the operator exports before
// `docker compose up`.
const composeAdminToken = "compose-test-admin-token-0123456789"

// reconcilerEnv is the reconciler service's environment as the
// configuration package will see it in the container; the admin token file
// it names, a compose secret mounted in the container, is replaced by a
// local file holding composeAdminToken. secret is that secret's name ("" if
// the reconciler reads no token file).
func reconcilerEnv(t *testing.T, p *types.Project) (env map[string]string, secret string) {
	t.Helper()
	return serviceEnv(t, p, "reconciler")
}

// serviceEnv is reconcilerEnv for any reconciler service (the replicas).
func serviceEnv(t *testing.T, p *types.Project, name string) (env map[string]string, secret string) {
	t.Helper()
	rec := service(t, p, name)
	env = map[string]string{}
	for k, v := range rec.Environment {
		if v != nil {
			env[k] = *v
		}
	}
	file := env["TUNNELWARD_ADMIN_TOKEN_FILE"]
	if file == "" {
		return env, ""
	}
	for _, sec := range rec.Secrets {
		if secretPath(sec) != file {
			continue
		}
		secret = sec.Source
		top, ok := p.Secrets[sec.Source]
		if !ok {
			t.Fatalf("reconciler mounts secret %q, which compose.yaml does not define", sec.Source)
		}
		// From the environment of `docker compose up`: never a file in the
		// repository, never inline in compose.yaml.
		if top.Environment == "" || top.File != "" || top.Content != "" {
			t.Errorf("secret %q should come from an environment variable of the host (environment:), not a file or inline content", sec.Source)
		}
		// Both images run as non-root users.
		if sec.Mode == nil || *sec.Mode != 0o444 {
			t.Errorf("secret %q is mounted without mode 0444; the non-root reconciler could not read it", sec.Source)
		}
	}
	if secret == "" {
		t.Fatalf("TUNNELWARD_ADMIN_TOKEN_FILE=%s is not where any of the reconciler's secrets is mounted", file)
	}
	local := filepath.Join(t.TempDir(), "admin_token")
	if err := os.WriteFile(local, []byte(composeAdminToken), 0o600); err != nil {
		t.Fatal(err)
	}
	env["TUNNELWARD_ADMIN_TOKEN_FILE"] = local
	return env, secret
}

// exportedMetricNames is every series name the metrics package exposes,
// with histogram suffixes.
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	fams, err := metrics.Families()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range fams {
		out[f.Name] = true
		if f.Histogram {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				out[f.Name+s] = true
			}
		}
	}
	return out
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// dockerfile returns the Dockerfile's instructions, continuation lines
// joined and comments dropped.
func dockerfile(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

func dockerfileStages(t *testing.T) []string {
	var stages []string
	for _, ins := range dockerfile(t) {
		f := strings.Fields(ins)
		if strings.EqualFold(f[0], "FROM") && len(f) >= 4 && strings.EqualFold(f[2], "AS") {
			stages = append(stages, f[3])
		}
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	ins := dockerfile(t)
	all := strings.Join(ins, "\n")
	// Go version follows go.mod.
	if want := "ARG GO_VERSION=" + goModVersion(t, "go"); !slices.Contains(ins, want) {
		t.Errorf("Dockerfile lacks %q", want)
	}
	// Static, reproducible binaries for every command, with build caches.
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "--mount=type=cache,target=/go/pkg/mod", "--mount=type=cache,target=/root/.cache/go-build"} {
		if !strings.Contains(all, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}
	for _, cmd := range []string{"reconciler", "publisher", "cloudsim"} {
		if !strings.Contains(all, "./cmd/"+cmd) {
			t.Errorf("Dockerfile does not build ./cmd/%s", cmd)
		}
		if st, err := os.Stat(filepath.Join(repoRoot(t), "cmd", cmd)); err != nil || !st.IsDir() {
			t.Errorf("Dockerfile builds ./cmd/%s, which does not exist", cmd)
		}
	}
	// Multi-stage; the runtime stages are distroless or scratch and never root.
	var stage, base string
	users := map[string]string{}
	bases := map[string]string{}
	var order []string
	for _, i := range ins {
		f := strings.Fields(i)
		switch strings.ToUpper(f[0]) {
		case "FROM":
			base, stage = f[1], ""
			if len(f) >= 4 {
				stage = f[3]
			}
			bases[stage] = base
			if u, ok := users[base]; ok { // FROM an earlier stage inherits its USER
				users[stage] = u
			}
			order = append(order, stage)
		case "USER":
			users[stage] = f[1]
		case "ENV":
			for _, kv := range f[1:] {
				k, _, _ := strings.Cut(kv, "=")
				if strings.HasPrefix(k, config.EnvPrefix) && !slices.Contains(config.EnvVars(), k) {
					t.Errorf("Dockerfile sets %s, which the reconciler does not read", k)
				}
			}
		}
	}
	if len(order) < 2 {
		t.Fatalf("Dockerfile has %d stages; want a build stage and runtime stages", len(order))
	}
	if last := order[len(order)-1]; last != "reconciler" {
		t.Errorf("the default (last) target is %q, want reconciler", last)
	}
	for _, target := range []string{"reconciler", "cloudsim"} {
		u, ok := users[target]
		if !ok {
			t.Errorf("target %s sets no USER", target)
			continue
		}
		uid, _, _ := strings.Cut(u, ":")
		if uid == "0" || uid == "root" {
			t.Errorf("target %s runs as root", target)
		}
		b := bases[target]
		for bases[b] != "" { // follow FROM <stage> to the image
			b = bases[b]
		}
		if !strings.HasPrefix(b, "gcr.io/distroless/static") && b != "scratch" {
			t.Errorf("target %s is based on %s, want distroless/static or scratch", target, b)
		}
	}
	// The context excludes what must never reach an image.
	ig, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".git", "data", "**/*.db"} {
		if !slices.Contains(strings.Fields(string(ig)), want) {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// compose runs the replicated setup: three nats services forming one
// JetStream cluster, and several reconciler replicas, each with its own
// --replica-id, state volume and admin port, all on every NATS server with
// --stream-replicas equal to the cluster's size, every one scraped.
func TestComposeReplicas(t *testing.T) {
	p := loadCompose(t)
	var natsNames, recNames []string
	for name, s := range p.Services {
		if strings.HasPrefix(s.Image, "nats:") {
			natsNames = append(natsNames, name)
		}
		if s.Build != nil && s.Build.Target == "reconciler" {
			recNames = append(recNames, name)
		}
	}
	slices.Sort(natsNames)
	slices.Sort(recNames)
	if len(natsNames) != 3 {
		t.Fatalf("nats services %v: want a 3-node JetStream cluster", natsNames)
	}
	if len(recNames) < 2 {
		t.Fatalf("reconciler services %v: want at least two replicas", recNames)
	}
	clusterName, names := "", map[string]bool{}
	for _, n := range natsNames {
		cmd := []string(p.Services[n].Command)
		cn, ok := flagValue(cmd, "--cluster_name")
		if !ok || (clusterName != "" && cn != clusterName) {
			t.Errorf("%s: cluster name %q, want one shared by every nats service", n, cn)
		}
		clusterName = cn
		name, _ := flagValue(cmd, "-n", "--name", "--server_name")
		if name == "" || names[name] {
			t.Errorf("%s: server name %q, want a unique one", n, name)
		}
		names[name] = true
		routes, _ := flagValue(cmd, "--routes")
		for _, other := range natsNames {
			if !strings.Contains(routes, "nats://"+other+":6222") {
				t.Errorf("%s: routes %q do not reach %s", n, routes, other)
			}
		}
		if sd, _ := flagValue(cmd, "-sd", "--store_dir"); !hasVolumeAt(p.Services[n], sd) {
			t.Errorf("%s: JetStream store %s not on a volume", n, sd)
		}
	}
	ids, ports, dirs := map[string]bool{}, map[int]bool{}, map[string]bool{}
	var targets []string
	for _, n := range recNames {
		env, _ := serviceEnv(t, p, n)
		cfg, err := config.Parse(nil, func(k string) string { return env[k] })
		if err != nil {
			t.Fatalf("%s: configuration rejected: %v", n, err)
		}
		if ids[cfg.ReplicaID] {
			t.Errorf("%s: --replica-id %s is another replica's too", n, cfg.ReplicaID)
		}
		ids[cfg.ReplicaID] = true
		if cfg.StreamReplicas != len(natsNames) {
			t.Errorf("%s: --stream-replicas %d on a %d-node cluster", n, cfg.StreamReplicas, len(natsNames))
		}
		for _, other := range natsNames {
			if !strings.Contains(cfg.NATS.URL, "nats://"+other+":4222") {
				t.Errorf("%s: --nats-url %s lacks %s", n, cfg.NATS.URL, other)
			}
		}
		s := p.Services[n]
		for _, pc := range s.Ports {
			if pc.Target == uint32(port(t, cfg.AdminListen)) {
				hp, _ := strconv.Atoi(pc.Published)
				if ports[hp] {
					t.Errorf("%s: admin published on host port %d, as another replica", n, hp)
				}
				ports[hp] = true
			}
		}
		for _, v := range s.Volumes {
			if v.Target == cfg.DataDir {
				if dirs[v.Source] {
					t.Errorf("%s: data volume %s is another replica's too", n, v.Source)
				}
				dirs[v.Source] = true
			}
		}
		targets = append(targets, n+":"+strconv.Itoa(port(t, cfg.AdminListen)))
	}
	var pc struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, filepath.Join(repoRoot(t), "deploy", "prometheus", "prometheus.yml"), &pc)
	var scraped []string
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			scraped = append(scraped, st.Targets...)
		}
	}
	for _, tg := range targets {
		if !slices.Contains(scraped, tg) {
			t.Errorf("prometheus does not scrape %s", tg)
		}
	}
}
