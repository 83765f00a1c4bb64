package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// decodeJSON reads r's body, at most s.maxJSONBody bytes, as one JSON object into v. Every
// failure is errInvalidRequest (422) or errTooLarge (413). Fields v does not have are ignored,
// as the seed's FastAPI models did. The messages never quote the body: it may hold a password.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, s.maxJSONBody))
	err := dec.Decode(v)
	if err == nil {
		// One object and nothing after it but white space.
		if err = dec.Decode(&struct{}{}); err == io.EOF {
			return nil
		} else if err == nil {
			err = errors.New("more than one value")
		}
	}
	var (
		maxErr  *http.MaxBytesError
		typeErr *json.UnmarshalTypeError
		synErr  *json.SyntaxError
	)
	switch {
	case errors.Is(err, errBodyTimeout) || errors.Is(err, errClientGone):
		return err
	case errors.As(err, &maxErr):
		return tooLarge("the request body is over the limit of %d bytes", maxErr.Limit)
	case err == io.EOF:
		return invalid("the request body is empty")
	case errors.As(err, &typeErr) && typeErr.Field == "":
		return invalid("the request body must be a JSON object")
	case errors.As(err, &typeErr):
		return invalid("field %q must be a %s", typeErr.Field, typeErr.Type)
	case errors.As(err, &synErr):
		return invalid("the request body is not valid JSON (at byte %d)", synErr.Offset)
	default: // io.ErrUnexpectedEOF, more than one value, a broken connection
		return invalid("the request body is not valid JSON")
	}
}
