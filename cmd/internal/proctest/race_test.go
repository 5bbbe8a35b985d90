//go:build race

package proctest

// raceEnabled makes TestMain build the binary with -race as well.
const raceEnabled = true
