package admin

import (
	"net/http"

	"github.com/tunnelward/tunnelward/internal/cluster"
)

// ClusterOrg is GET /v1/cluster?org=ID: where an org is reconciled.
type ClusterOrg struct {
	Org       string `json:"org"`
	Partition int    `json:"partition"`
	// Owner is the replica holding the partition's lease ("" while free):
	// its /v1/orgs/{id} has the org's current observed state and
	// conditions; every replica has its desired state.
	Owner string `json:"owner"`
}

// ServeCluster serves GET /v1/cluster: the replicas, the partitions each
// holds and their lease ages as this replica saw them at its last round
// (cluster.View); with ?org=ID, the org's partition and owner.
func (s *Server) ServeCluster(m *cluster.Manager) {
	s.mux.HandleFunc("GET /v1/cluster", func(w http.ResponseWriter, r *http.Request) {
		if org := r.URL.Query().Get("org"); org != "" {
			p, owner := m.Owner(org)
			writeJSON(w, http.StatusOK, ClusterOrg{Org: org, Partition: p, Owner: owner})
			return
		}
		writeJSON(w, http.StatusOK, m.View())
	})
}
