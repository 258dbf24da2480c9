package bench

import (
	"context"
	"errors"
)

func benchHeadroom(ctx context.Context, o Options, rep *Report) ([]Row, error) {
	return nil, errors.New("todo")
}
