#!/usr/bin/env bash
# gen-kat.sh writes kat-openssl.txt: known answers of `openssl enc -aes-256-cbc` (PKCS#7
# padding) for one random key, IV and 4099-byte plaintext p, for every length n from 0 to
# 4 KiB + 3 of p[:n]. TestKnownAnswers reads them; they are stored rather than made at test
# time so that the arm64 run under qemu checks against the same answers.
#
# CBC makes the ciphertext of p[:n] the ciphertext of p up to the last whole block of p[:n],
# then one block of its own (its last plaintext bytes and the padding). So the file holds the
# ciphertext of all of p ("full") and, per n, that last block; this script checks the prefix
# against every one of the 4100 openssl runs before it writes anything.
set -euo pipefail
cd "$(dirname "$0")"
max=4099
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
hex() { od -An -v -tx1 "$@" | tr -d ' \n'; }

key=$(openssl rand -hex 32)
iv=$(openssl rand -hex 16)
openssl rand -out "$tmp/plain" "$max"
openssl enc -aes-256-cbc -K "$key" -iv "$iv" -in "$tmp/plain" -out "$tmp/full"
{
	echo "# Known answers made by testdata/gen-kat.sh with $(openssl version | head -n1); do not edit."
	echo "# The ciphertext of plain[:n] is full[:n/16*16] followed by the block on line \"last n\"."
	echo "key $key"
	echo "iv $iv"
	echo "plain $(hex "$tmp/plain")"
	echo "full $(hex "$tmp/full")"
	for ((n = 0; n <= max; n++)); do
		head -c "$n" "$tmp/plain" >"$tmp/p"
		openssl enc -aes-256-cbc -K "$key" -iv "$iv" -in "$tmp/p" -out "$tmp/c"
		size=$(stat -c %s "$tmp/c")
		want=$(((n / 16 + 1) * 16))
		[[ $size == "$want" ]] || { echo "n=$n: openssl wrote $size bytes, want $want" >&2; exit 1; }
		prefix=$((n / 16 * 16))
		cmp -s -n "$prefix" "$tmp/c" "$tmp/full" || { echo "n=$n: not a prefix of the full ciphertext" >&2; exit 1; }
		echo "last $n $(tail -c 16 "$tmp/c" | hex)"
	done
} >"$tmp/kat"
mv "$tmp/kat" kat-openssl.txt
echo "wrote $(pwd)/kat-openssl.txt"
