// Package monitoring holds no code: it is the home of the tests that keep
// the monitoring artifacts (deploy/prometheus/alerts.yaml,
// deploy/grafana/tunnelward.json) true to the code, with Prometheus's own
// rule-file and PromQL packages. Those come from the Prometheus server
// module, so they live in this package of their own: nothing outside its
// tests links them.
package monitoring
