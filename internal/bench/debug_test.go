package bench

import (
	"context"
	"fmt"
	"testing"
	"time"
	"log/slog"
	"os"
	"github.com/tunnelward/tunnelward/internal/reconcile"
)

func TestDebugEconomy(t *testing.T) {
	w, err := newWorld(worldOpts{engine: func(c *reconcile.Config) { c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)) }})
	if err != nil { t.Fatal(err) }
	defer w.close()
	w.start()
	st := time.Now()
	w.apply(created("x"))
	at, err := w.waitOrgs(context.Background(), []string{"x"}, 5*time.Millisecond, ready)
	fmt.Println(at["x"].Sub(st), err)
	fmt.Println(sumCalls(w.sim.Calls()).detail())
	o, _, _ := w.store.Get("x")
	fmt.Printf("%+v\n", o.Observed)
}
