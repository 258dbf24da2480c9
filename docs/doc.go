// Package docs holds the operator documentation and the tests that keep it
// true: the configuration reference is generated from internal/config, and
// every command of the nats CLI guide is run against a real server.
package docs
