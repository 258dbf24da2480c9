package bench

import (
	"context"
	"errors"
)

func benchScale(ctx context.Context, o Options) ([]Row, error) { return nil, errors.New("todo") }
func benchHeadroom(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	return nil, errors.New("todo")
}
func IsChild() bool { return false }
func RunChild() int { return 0 }
