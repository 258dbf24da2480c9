package cloudsim

import "net/http"

// serveEC2 serves the EC2 query API. TODO(aws owner)
func (s *Sim) serveEC2(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
