// Package depsanchor keeps the project's chosen modules in go.mod while the
// packages that use them are being written. It is removed once they all are.
package depsanchor

import (
	_ "github.com/aws/aws-sdk-go-v2/aws"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/credentials"
	_ "github.com/aws/aws-sdk-go-v2/service/ec2"
	_ "github.com/aws/aws-sdk-go-v2/service/ssm"
	_ "github.com/aws/smithy-go"
	_ "github.com/cloudflare/cloudflare-go/v7/dns"
	_ "github.com/cloudflare/cloudflare-go/v7/option"
	_ "github.com/cloudflare/cloudflare-go/v7/zero_trust"
	_ "github.com/compose-spec/compose-go/v2/loader"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nats.go/jetstream"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/time/rate"
)
