// Added to FerretDB's postgresql backend by Perdure's local stack (see README.md beside this file).

package postgresql

import (
	"fmt"
	"strings"

	"github.com/FerretDB/FerretDB/internal/backends/postgresql/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

// perdurePushdown returns an index-served filter for a top-level equality, and false for anything
// else (which keeps FerretDB's own pushdown).
//
// `_id` is compared with `=`, which the table's unique `_id` index serves (MongoDB forbids arrays as
// `_id`, so equality is exact). Other keys keep FerretDB's containment test `@>` (a scalar in an array
// must still match), but with the key written into the SQL instead of passed as a parameter, so the
// GIN indexes the patched index creation makes on `_jsonb->'key'` can serve it.
func perdurePushdown(p *metadata.Placeholder, key string, value any) (string, any, bool) {
	if key == "" || strings.HasPrefix(key, "$") || strings.Contains(key, ".") {
		return "", nil, false
	}

	var arg any

	switch v := value.(type) {
	case string, types.ObjectID:
		arg = string(must.NotFail(sjson.MarshalSingleValue(v)))
	case bool, int32:
		if key == "_id" {
			return "", nil, false
		}
		arg = v
	case int64:
		if key == "_id" || v > int64(types.MaxSafeDouble) || v < -int64(types.MaxSafeDouble) {
			return "", nil, false
		}
		arg = v
	default:
		return "", nil, false
	}

	column := fmt.Sprintf("%s->%s", metadata.DefaultColumn, quoteLiteral(key))
	if key == "_id" {
		return fmt.Sprintf("%s = %s", column, p.Next()), arg, true
	}

	return fmt.Sprintf("%s @> %s", column, p.Next()), arg, true
}

// quoteLiteral quotes a key as an SQL string literal (FerretDB checks at connection time that
// standard_conforming_strings is on, which makes doubling quotes sufficient).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
