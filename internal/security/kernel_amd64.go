//go:build !purego

package security

import "golang.org/x/sys/cpu"

// asmSupported: the CPU has AES-NI (the kernel needs nothing beyond it and SSE2).
var asmSupported = cpu.X86.HasAES

const asmKernelName = "amd64 AES-NI assembly, 8 blocks in flight"
