//go:build !purego

package security

import "golang.org/x/sys/cpu"

// asmSupported: the CPU has the ARMv8 AES instructions (absent on some cores, e.g. the
// Raspberry Pi 4's Cortex-A72).
var asmSupported = cpu.ARM64.HasAES

const asmKernelName = "arm64 ARMv8 AES assembly, 8 blocks in flight"
