// Added to FerretDB's postgresql backend by Perdure's local stack (see ../README.md).
//
// FerretDB v1 pushes `{_id: value}` down as `_jsonb->$1 @> $2`: the key is a parameter and the
// operator is containment, so PostgreSQL cannot use the unique expression index on `_jsonb->'_id'`
// and every point read or conditional update scans the whole table. MongoDB forbids arrays as
// `_id`, so for a string or ObjectID equality on `_id` is exact and the index serves it.

package postgresql

import (
	"fmt"

	"github.com/FerretDB/FerretDB/internal/backends/postgresql/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// perdureIDEquality returns an index-served filter for a top-level `_id` equality on a string or
// ObjectID, and false for anything else (which keeps FerretDB's own pushdown).
func perdureIDEquality(p *metadata.Placeholder, key string, value any) (string, any, bool) {
	if key != "_id" {
		return "", nil, false
	}

	switch v := value.(type) {
	case string, types.ObjectID:
		filter := fmt.Sprintf(`%s->'_id' = %s`, metadata.DefaultColumn, p.Next())
		return filter, string(must.NotFail(sjson.MarshalSingleValue(v))), true
	default:
		return "", nil, false
	}
}
