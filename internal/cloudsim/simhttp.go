package cloudsim

import "net/http"

// serveSim serves /_sim/ endpoints. TODO(cf/core owner)
func (s *Sim) serveSim(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
