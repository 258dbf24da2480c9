// Package deploy holds no code: it is the home of the deployment artifacts
// (compose.yaml and the Dockerfile at the root, Prometheus and IAM files
// here) and of the tests that keep them true to the code. There is no
// container engine on the build machines, so the files are loaded and
// checked instead of run.
package deploy
