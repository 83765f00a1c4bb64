//go:build !purego

#include "textflag.h"

// AES-256-CBC decryption with the ARMv8 Cryptography Extensions (see kernel.go): eight
// blocks through AESD+AESIMC at once, as in cbc_amd64.s. The 15 round keys stay in
// V16-V30 for the whole call, the eight blocks in V0-V7 and their ciphertext in V8-V15.
//
// AESD does AddRoundKey first and AESIMC is a separate instruction, so with the same
// schedule as AESDEC's (dk[0] = ek[14], dk[i] = InvMixColumns(ek[14-i]), dk[14] = ek[0]) a
// block is: AESD dk[0], AESIMC, ..., AESD dk[12], AESIMC, AESD dk[13], XOR dk[14].

// NEXT_EVEN turns w[i-8..i-5] in R4-R7 into w[i..i+3]: w[i] = w[i-8] ^ SubWord(RotWord(w[i-1]))
// ^ rcon, w[i-1] being R11. The S-box is AESE with an all-zero round key (V0) on w[i-1] copied
// into all four columns: ShiftRows then moves nothing, so every column is SubWord(w[i-1]),
// and no memory is read at an address that depends on the key. RotWord commutes with SubWord
// and is a rotation of the little-endian word by 8 bits.
#define NEXT_EVEN \
	VDUP  R11, V3.S4; \
	AESE  V0.B16, V3.B16; \
	VMOV  V3.S[0], R14; \
	RORW  $8, R14; \
	EORW  R12, R14; \
	EORW  R14, R4; \
	EORW  R4, R5; \
	EORW  R5, R6; \
	EORW  R6, R7

// NEXT_ODD turns w[i-8..i-5] in R8-R11 into w[i..i+3] with w[i] = w[i-8] ^ SubWord(w[i-1]),
// w[i-1] being R7.
#define NEXT_ODD \
	VDUP  R7, V3.S4; \
	AESE  V0.B16, V3.B16; \
	VMOV  V3.S[0], R14; \
	EORW  R14, R8; \
	EORW  R8, R9; \
	EORW  R9, R10; \
	EORW  R10, R11

// STORE_INV stores InvMixColumns of the round key in a, b, c, d at (R1) and steps R1 back.
#define STORE_INV(a, b, c, d) \
	VMOV   a, V1.S[0]; \
	VMOV   b, V1.S[1]; \
	VMOV   c, V1.S[2]; \
	VMOV   d, V1.S[3]; \
	AESIMC V1.B16, V2.B16; \
	VST1   [V2.B16], (R1); \
	SUB    $16, R1

// func expandDecKeys(key *[32]byte, dk *[240]byte)
TEXT ·expandDecKeys(SB), NOSPLIT, $0-16
	MOVD  key+0(FP), R0
	MOVD  dk+8(FP), R1
	VEOR  V0.B16, V0.B16, V0.B16
	LDPW  0(R0), (R4, R5)
	LDPW  8(R0), (R6, R7)
	LDPW  16(R0), (R8, R9)
	LDPW  24(R0), (R10, R11)
	ADD   $224, R1
	STPW  (R4, R5), 0(R1)      // dk[14] = ek[0]
	STPW  (R6, R7), 8(R1)
	SUB   $16, R1
	STORE_INV(R8, R9, R10, R11) // dk[13] = InvMixColumns(ek[1])
	MOVW  $1, R12              // rcon
	MOVW  $6, R13              // pairs of round keys before the last one

pairs:
	NEXT_EVEN
	STORE_INV(R4, R5, R6, R7)
	NEXT_ODD
	STORE_INV(R8, R9, R10, R11)
	LSLW  $1, R12
	SUBSW $1, R13
	BNE   pairs

	NEXT_EVEN                  // ek[14], rcon 0x40
	STPW  (R4, R5), 0(R1)      // dk[0]
	STPW  (R6, R7), 8(R1)
	// Clear the key material from the registers.
	VEOR  V1.B16, V1.B16, V1.B16
	VEOR  V2.B16, V2.B16, V2.B16
	VEOR  V3.B16, V3.B16, V3.B16
	MOVD  ZR, R4
	MOVD  ZR, R5
	MOVD  ZR, R6
	MOVD  ZR, R7
	MOVD  ZR, R8
	MOVD  ZR, R9
	MOVD  ZR, R10
	MOVD  ZR, R11
	MOVD  ZR, R14
	RET

// ROUND8 runs AESD with round key k, then AESIMC, on all eight blocks.
#define ROUND8(k) \
	AESD   k, V0.B16; \
	AESIMC V0.B16, V0.B16; \
	AESD   k, V1.B16; \
	AESIMC V1.B16, V1.B16; \
	AESD   k, V2.B16; \
	AESIMC V2.B16, V2.B16; \
	AESD   k, V3.B16; \
	AESIMC V3.B16, V3.B16; \
	AESD   k, V4.B16; \
	AESIMC V4.B16, V4.B16; \
	AESD   k, V5.B16; \
	AESIMC V5.B16, V5.B16; \
	AESD   k, V6.B16; \
	AESIMC V6.B16, V6.B16; \
	AESD   k, V7.B16; \
	AESIMC V7.B16, V7.B16

// FINISH XORs block b with dk[14] (V30) and the ciphertext block before it, prev.
#define FINISH(b, prev) \
	VEOR V30.B16, b, b; \
	VEOR prev, b, b

// ROUND1 runs AESD with round key k, then AESIMC, on the block in V0.
#define ROUND1(k) \
	AESD   k, V0.B16; \
	AESIMC V0.B16, V0.B16

// func cbcDecryptAsm(dk *[240]byte, iv *[16]byte, dst, src []byte)
//
// Decrypts len(src) bytes (whole blocks) following the ciphertext block *iv into dst,
// which is src or does not overlap it, and sets *iv to the last block of src. A group's
// ciphertext is loaded (and copied to V8-V15) before any of it is stored, so dst == src
// is safe.
TEXT ·cbcDecryptAsm(SB), NOSPLIT, $0-64
	MOVD   dk+0(FP), R0
	MOVD   iv+8(FP), R1
	MOVD   dst_base+16(FP), R2
	MOVD   src_base+40(FP), R3
	MOVD   src_len+48(FP), R4
	VLD1.P 64(R0), [V16.B16, V17.B16, V18.B16, V19.B16]
	VLD1.P 64(R0), [V20.B16, V21.B16, V22.B16, V23.B16]
	VLD1.P 64(R0), [V24.B16, V25.B16, V26.B16, V27.B16]
	VLD1   (R0), [V28.B16, V29.B16, V30.B16]
	VLD1   (R1), [V31.B16]     // the ciphertext block before the next one
	CMP    $128, R4
	BLT    single

eight:
	VLD1.P 64(R3), [V0.B16, V1.B16, V2.B16, V3.B16]
	VLD1.P 64(R3), [V4.B16, V5.B16, V6.B16, V7.B16]
	VMOV   V0.B16, V8.B16
	VMOV   V1.B16, V9.B16
	VMOV   V2.B16, V10.B16
	VMOV   V3.B16, V11.B16
	VMOV   V4.B16, V12.B16
	VMOV   V5.B16, V13.B16
	VMOV   V6.B16, V14.B16
	VMOV   V7.B16, V15.B16
	ROUND8(V16.B16)
	ROUND8(V17.B16)
	ROUND8(V18.B16)
	ROUND8(V19.B16)
	ROUND8(V20.B16)
	ROUND8(V21.B16)
	ROUND8(V22.B16)
	ROUND8(V23.B16)
	ROUND8(V24.B16)
	ROUND8(V25.B16)
	ROUND8(V26.B16)
	ROUND8(V27.B16)
	ROUND8(V28.B16)
	AESD   V29.B16, V0.B16
	AESD   V29.B16, V1.B16
	AESD   V29.B16, V2.B16
	AESD   V29.B16, V3.B16
	AESD   V29.B16, V4.B16
	AESD   V29.B16, V5.B16
	AESD   V29.B16, V6.B16
	AESD   V29.B16, V7.B16
	FINISH(V0.B16, V31.B16)
	FINISH(V1.B16, V8.B16)
	FINISH(V2.B16, V9.B16)
	FINISH(V3.B16, V10.B16)
	FINISH(V4.B16, V11.B16)
	FINISH(V5.B16, V12.B16)
	FINISH(V6.B16, V13.B16)
	FINISH(V7.B16, V14.B16)
	VMOV   V15.B16, V31.B16
	VST1.P [V0.B16, V1.B16, V2.B16, V3.B16], 64(R2)
	VST1.P [V4.B16, V5.B16, V6.B16, V7.B16], 64(R2)
	SUB    $128, R4
	CMP    $128, R4
	BGE    eight

single:
	CBZ    R4, done

one:
	VLD1.P 16(R3), [V0.B16]
	VMOV   V0.B16, V8.B16
	ROUND1(V16.B16)
	ROUND1(V17.B16)
	ROUND1(V18.B16)
	ROUND1(V19.B16)
	ROUND1(V20.B16)
	ROUND1(V21.B16)
	ROUND1(V22.B16)
	ROUND1(V23.B16)
	ROUND1(V24.B16)
	ROUND1(V25.B16)
	ROUND1(V26.B16)
	ROUND1(V27.B16)
	ROUND1(V28.B16)
	AESD   V29.B16, V0.B16
	FINISH(V0.B16, V31.B16)
	VMOV   V8.B16, V31.B16
	VST1.P [V0.B16], 16(R2)
	SUBS   $16, R4
	BNE    one

done:
	VST1   [V31.B16], (R1)
	RET
