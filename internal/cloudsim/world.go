package cloudsim

import "net/http"

// instanceRunning starts the simulated cloudflared of inst. Caller holds s.mu.
// TODO(cf/core owner)
func (s *Sim) instanceRunning(inst *Instance) {}

// instanceDown drops the connector of inst. Caller holds s.mu.
// TODO(cf/core owner)
func (s *Sim) instanceDown(inst *Instance) {}

// runShellScript runs AWS-RunShellScript commands on inst. Caller holds s.mu.
// TODO(cf/core owner)
func (s *Sim) runShellScript(inst *Instance, commands []string) (string, int32) {
	return "", 0
}

var _ = http.StatusOK
