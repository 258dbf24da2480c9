package cloudsim

import "net/http"

// serveCloudflare serves /client/v4/. TODO(cf/core owner)
func (s *Sim) serveCloudflare(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) }
