package cloudsim

import "net/http"

// serveSSM serves the SSM JSON 1.1 API. TODO(aws owner)
func (s *Sim) serveSSM(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
