// Package docs holds the operator documentation and the tests that keep it
// true: the configuration reference is generated from internal/config,
// every command of the nats CLI guide is run against a real server, and the
// README's walkthrough is run top to bottom on one sandbox with the built
// commands.
package docs
