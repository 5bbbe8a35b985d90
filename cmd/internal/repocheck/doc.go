// Package repocheck holds tests that keep the repository's promises to a
// newcomer true: the README's two commands and CI running the README's test
// command.
package repocheck
