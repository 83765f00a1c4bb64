//go:build !purego

#include "textflag.h"

// AES-256-CBC decryption with AES-NI (see kernel.go). Plaintext block i is
// AES-decrypt(C[i]) XOR C[i-1] with no chaining between the AES calls, so eight blocks go
// through the AES unit at once: AESDEC has a latency of several cycles but starts a new
// block every cycle or two, and one block at a time leaves it idle most of the time.
//
// The round keys are the "equivalent inverse cipher" schedule of FIPS 197 §5.3.5 that
// AESDEC expects: dk[0] = ek[14], dk[i] = InvMixColumns(ek[14-i]), dk[14] = ek[0].

// EXPAND_EVEN computes the next even-numbered encryption round key in X1 from the previous
// one in X1 and the odd one in X3: w[i] = w[i-8] ^ SubWord(RotWord(w[i-1])) ^ rcon, then
// the prefix XOR of the four words. AESKEYGENASSIST does the S-box in hardware, so nothing
// here reads memory at an address that depends on the key.
#define EXPAND_EVEN(rcon) \
	AESKEYGENASSIST $rcon, X3, X2; \
	PSHUFD          $0xff, X2, X2; \
	MOVO            X1, X4; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X1; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X1; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X1; \
	PXOR            X2, X1

// EXPAND_ODD computes the next odd-numbered round key in X3 from X3 and the even one just
// made in X1: the same without RotWord and rcon (word 2 of AESKEYGENASSIST's result).
#define EXPAND_ODD \
	AESKEYGENASSIST $0, X1, X2; \
	PSHUFD          $0xaa, X2, X2; \
	MOVO            X3, X4; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X3; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X3; \
	PSLLDQ          $4, X4; \
	PXOR            X4, X3; \
	PXOR            X2, X3

// STORE_INV stores InvMixColumns(reg) at dk+off.
#define STORE_INV(reg, off) \
	AESIMC reg, X5; \
	MOVOU  X5, off(DX)

// func expandDecKeys(key *[32]byte, dk *[240]byte)
TEXT ·expandDecKeys(SB), NOSPLIT, $0-16
	MOVQ  key+0(FP), AX
	MOVQ  dk+8(FP), DX
	MOVOU 0(AX), X1           // ek[0]
	MOVOU 16(AX), X3          // ek[1]
	MOVOU X1, 224(DX)         // dk[14] = ek[0]
	STORE_INV(X3, 208)        // dk[13]
	EXPAND_EVEN(0x01)
	STORE_INV(X1, 192)        // ek[2] -> dk[12]
	EXPAND_ODD
	STORE_INV(X3, 176)        // ek[3] -> dk[11]
	EXPAND_EVEN(0x02)
	STORE_INV(X1, 160)
	EXPAND_ODD
	STORE_INV(X3, 144)
	EXPAND_EVEN(0x04)
	STORE_INV(X1, 128)
	EXPAND_ODD
	STORE_INV(X3, 112)
	EXPAND_EVEN(0x08)
	STORE_INV(X1, 96)
	EXPAND_ODD
	STORE_INV(X3, 80)
	EXPAND_EVEN(0x10)
	STORE_INV(X1, 64)
	EXPAND_ODD
	STORE_INV(X3, 48)
	EXPAND_EVEN(0x20)
	STORE_INV(X1, 32)         // ek[12] -> dk[2]
	EXPAND_ODD
	STORE_INV(X3, 16)         // ek[13] -> dk[1]
	EXPAND_EVEN(0x40)
	MOVOU X1, 0(DX)           // dk[0] = ek[14]
	// The key's words stay in registers the caller does not look at; clear them anyway.
	PXOR  X1, X1
	PXOR  X2, X2
	PXOR  X3, X3
	PXOR  X4, X4
	PXOR  X5, X5
	RET

// ROUND8 runs one middle decryption round, key dk[i] at off(AX), on all eight blocks.
#define ROUND8(off) \
	MOVOU  off(AX), X11; \
	AESDEC X11, X0; \
	AESDEC X11, X1; \
	AESDEC X11, X2; \
	AESDEC X11, X3; \
	AESDEC X11, X4; \
	AESDEC X11, X5; \
	AESDEC X11, X6; \
	AESDEC X11, X7

// LAST8 finishes block reg with the last round key XORed with the ciphertext block before
// it, at off(SI): AESDECLAST's final XOR then does the CBC chaining too.
#define LAST8(off, reg) \
	MOVOU      off(SI), X12; \
	PXOR       X10, X12; \
	AESDECLAST X12, reg

// ROUND1 runs one middle round on the single block in X0.
#define ROUND1(off) \
	MOVOU  off(AX), X11; \
	AESDEC X11, X0

// func cbcDecryptAsm(dk *[240]byte, iv *[16]byte, dst, src []byte)
//
// Decrypts len(src) bytes (whole blocks) following the ciphertext block *iv into dst,
// which is src or does not overlap it, and sets *iv to the last block of src. Every
// ciphertext block a group needs is loaded before the group's first store, so dst == src
// is safe.
TEXT ·cbcDecryptAsm(SB), NOSPLIT, $0-64
	MOVQ  dk+0(FP), AX
	MOVQ  iv+8(FP), BX
	MOVQ  dst_base+16(FP), DI
	MOVQ  src_base+40(FP), SI
	MOVQ  src_len+48(FP), CX
	MOVOU (BX), X8            // the ciphertext block before the next one
	MOVOU 0(AX), X9           // dk[0]
	MOVOU 224(AX), X10        // dk[14]
	CMPQ  CX, $128
	JB    single

eight:
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVOU 64(SI), X4
	MOVOU 80(SI), X5
	MOVOU 96(SI), X6
	MOVOU 112(SI), X7
	PXOR  X9, X0
	PXOR  X9, X1
	PXOR  X9, X2
	PXOR  X9, X3
	PXOR  X9, X4
	PXOR  X9, X5
	PXOR  X9, X6
	PXOR  X9, X7
	ROUND8(16)
	ROUND8(32)
	ROUND8(48)
	ROUND8(64)
	ROUND8(80)
	ROUND8(96)
	ROUND8(112)
	ROUND8(128)
	ROUND8(144)
	ROUND8(160)
	ROUND8(176)
	ROUND8(192)
	ROUND8(208)
	MOVO       X10, X12
	PXOR       X8, X12
	AESDECLAST X12, X0
	LAST8(0, X1)
	LAST8(16, X2)
	LAST8(32, X3)
	LAST8(48, X4)
	LAST8(64, X5)
	LAST8(80, X6)
	LAST8(96, X7)
	MOVOU      112(SI), X8
	MOVOU      X0, 0(DI)
	MOVOU      X1, 16(DI)
	MOVOU      X2, 32(DI)
	MOVOU      X3, 48(DI)
	MOVOU      X4, 64(DI)
	MOVOU      X5, 80(DI)
	MOVOU      X6, 96(DI)
	MOVOU      X7, 112(DI)
	ADDQ       $128, SI
	ADDQ       $128, DI
	SUBQ       $128, CX
	CMPQ       CX, $128
	JAE        eight

single:
	TESTQ CX, CX
	JZ    done

one:
	MOVOU      (SI), X0
	MOVO       X0, X13
	PXOR       X9, X0
	ROUND1(16)
	ROUND1(32)
	ROUND1(48)
	ROUND1(64)
	ROUND1(80)
	ROUND1(96)
	ROUND1(112)
	ROUND1(128)
	ROUND1(144)
	ROUND1(160)
	ROUND1(176)
	ROUND1(192)
	ROUND1(208)
	MOVO       X10, X12
	PXOR       X8, X12
	AESDECLAST X12, X0
	MOVO       X13, X8
	MOVOU      X0, (DI)
	ADDQ       $16, SI
	ADDQ       $16, DI
	SUBQ       $16, CX
	JNZ        one

done:
	MOVOU X8, (BX)
	RET
