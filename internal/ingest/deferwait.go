package ingest

import (
	"context"
	"time"
)

// earlierPending reports whether an event before seq is still unacked: in
// flight to this process or to one that died, whose redelivery comes only
// after AckWait. Only then can a health report (or a rotation request) for
// an unknown org still be followed by the created it waits for; otherwise
// the org really is unknown and the report need not wait. Unknown (no
// answer): assume pending.
func (in *Ingester) earlierPending(seq uint64) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	info, err := in.cons.Info(ctx)
	if err != nil {
		return true
	}
	return info.AckFloor.Stream+1 < seq
}
