package resourceapi

import (
	"strconv"
	"strings"
)

// Role is a user's role on the Resource API. The values are the API's own, so a role that
// arrives as a number in a token means the same thing here.
type Role int

const (
	None             Role = 0
	Operator         Role = 10
	Validator        Role = 20
	CompanionPC      Role = 30
	Admin            Role = 40
	ResourceUploader Role = 50
	ApiAdmin         Role = 1000
)

var roleNames = map[Role]string{
	None:             "None",
	Operator:         "Operator",
	Validator:        "Validator",
	CompanionPC:      "CompanionPC",
	Admin:            "Admin",
	ResourceUploader: "ResourceUploader",
	ApiAdmin:         "ApiAdmin",
}

// String returns the role's name as the API spells it, or "Role(n)" for a value it does not
// define.
func (r Role) String() string {
	if name, ok := roleNames[r]; ok {
		return name
	}
	return "Role(" + strconv.Itoa(int(r)) + ")"
}

// ParseRole reads a role written as its name (any letter case) or as its number. Anything
// else, including a number the API does not define, is None: a token must never grant a role
// the loader does not know.
func ParseRole(s string) Role {
	s = strings.TrimSpace(s)
	if n, err := strconv.Atoi(s); err == nil {
		if _, ok := roleNames[Role(n)]; ok {
			return Role(n)
		}
		return None
	}
	for r, name := range roleNames {
		if strings.EqualFold(s, name) {
			return r
		}
	}
	return None
}
