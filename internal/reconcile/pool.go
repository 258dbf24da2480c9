package reconcile

import (
	"github.com/tunnelward/tunnelward/internal/state"
)

// An org's tunnel and DNS record live in one Cloudflare pool (an account and
// a zone in it): the one org.created named (data.pool), else the one the
// placement policy picks among those with room. The placement is committed
// to bbolt before the org's first Cloudflare write and stays while the org
// has resources, like its AWS region.

// PoolOf is the pool an org is placed in, "" when it is not placed yet.
// Records from before pools name none: an org with a Cloudflare resource
// there is in the default pool.
func (e *Engine) PoolOf(org state.Org) string {
	ob := org.Observed
	switch {
	case ob.Pool != "":
		return ob.Pool
	case ob.TunnelID != "" || ob.DNSRecordID != "":
		return e.clouds.DefaultPool
	}
	return ""
}
