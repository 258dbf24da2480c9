// Package deploy holds no code: it is the home of the deployment artifacts
// (compose.yaml and the Dockerfile at the root; Prometheus, Grafana and
// IAM files here) and of the tests that keep them true to the code
// (monitoring/ checks the alert rules and the dashboard). There is no
// container engine on the build machines, so the files are loaded and
// checked instead of run.
package deploy
