//! WGSL compute kernels of the wgpu backend.
//!
//! Weights stay in their GGUF block format in `array<u32>` storage buffers and are dequantized inside the
//! kernels, 32 elements (one block) at a time. Blocks of 18 (Q4_0) and 34 (Q8_0) bytes are not 4-byte aligned:
//! they are read with byte-offset arithmetic (`ld`, `f16at`) and `unpack2x16float`. Block layouts as in
//! `quant/dequant.rs` (ggml `ggml-common.h`):
//!
//! | type | bytes / 32 | value of element `j` |
//! |------|-----------:|----------------------|
//! | F32  | 128 | the f32 |
//! | F16  | 64  | the f16 |
//! | Q8_0 | 34  | `d: f16`, `qs: i8[32]`; `d * qs[j]` |
//! | Q4_0 | 18  | `d: f16`, `qs: u8[16]`; `j < 16`: `d * ((qs[j] & 15) - 8)`, `j >= 16`: `d * ((qs[j-16] >> 4) - 8)` |
//! | Q4_1 | 20  | `d: f16`, `m: f16`, `qs: u8[16]`; `d * nibble + m` (nibbles as Q4_0) |
//!
//! Every kernel takes its scalar arguments in a uniform struct `P` of sixteen 32-bit words
//! ([`PARAM_WORDS`]); the Rust side writes them in the order of the struct's fields.

use crate::gguf::GgmlType;

/// 32-bit words of every kernel's uniform parameter block.
pub const PARAM_WORDS: usize = 16;

/// Workgroup size of every kernel.
pub const WG: u32 = 64;

/// Tokens per invocation of the matrix product (the dequantized block is reused for this many tokens).
pub const MATMUL_TILE: u32 = 8;

/// The weight types the kernels dequantize.
pub fn supported(ty: GgmlType) -> bool {
    block_fn(ty).is_some()
}

fn block_fn(ty: GgmlType) -> Option<&'static str> {
    Some(match ty {
        GgmlType::F32 => {
            r#"
fn block(bi: u32, d: ptr<function, array<vec4<f32>, 8>>) {
    let b = bi * 32u;
    for (var i = 0u; i < 8u; i++) {
        let j = b + 4u * i;
        (*d)[i] = bitcast<vec4<f32>>(vec4<u32>(w[j], w[j + 1u], w[j + 2u], w[j + 3u]));
    }
}"#
        }
        GgmlType::F16 => {
            r#"
fn block(bi: u32, d: ptr<function, array<vec4<f32>, 8>>) {
    let b = bi * 16u;
    for (var i = 0u; i < 8u; i++) {
        (*d)[i] = vec4<f32>(unpack2x16float(w[b + 2u * i]), unpack2x16float(w[b + 2u * i + 1u]));
    }
}"#
        }
        GgmlType::Q8_0 => {
            r#"
fn block(bi: u32, d: ptr<function, array<vec4<f32>, 8>>) {
    let b = bi * 34u;
    let s = f16at(b);
    for (var i = 0u; i < 8u; i++) {
        let v = bitcast<i32>(ld(b + 2u + 4u * i));
        (*d)[i] = vec4<f32>(f32(extractBits(v, 0u, 8u)), f32(extractBits(v, 8u, 8u)),
                            f32(extractBits(v, 16u, 8u)), f32(extractBits(v, 24u, 8u))) * s;
    }
}"#
        }
        GgmlType::Q4_0 => {
            r#"
fn block(bi: u32, d: ptr<function, array<vec4<f32>, 8>>) {
    let b = bi * 18u;
    let s = f16at(b);
    for (var i = 0u; i < 4u; i++) {
        let v = ld(b + 2u + 4u * i);
        let lo = vec4<f32>(f32(v & 15u), f32((v >> 8u) & 15u), f32((v >> 16u) & 15u), f32((v >> 24u) & 15u));
        let hi = vec4<f32>(f32((v >> 4u) & 15u), f32((v >> 12u) & 15u), f32((v >> 20u) & 15u), f32(v >> 28u));
        (*d)[i] = (lo - 8.0) * s;
        (*d)[i + 4u] = (hi - 8.0) * s;
    }
}"#
        }
        GgmlType::Q4_1 => {
            r#"
fn block(bi: u32, d: ptr<function, array<vec4<f32>, 8>>) {
    let b = bi * 20u;
    let s = f16at(b);
    let m = f16at(b + 2u);
    for (var i = 0u; i < 4u; i++) {
        let v = w[(b + 4u) / 4u + i];
        let lo = vec4<f32>(f32(v & 15u), f32((v >> 8u) & 15u), f32((v >> 16u) & 15u), f32((v >> 24u) & 15u));
        let hi = vec4<f32>(f32((v >> 4u) & 15u), f32((v >> 12u) & 15u), f32((v >> 20u) & 15u), f32(v >> 28u));
        (*d)[i] = lo * s + m;
        (*d)[i + 4u] = hi * s + m;
    }
}"#
        }
        _ => return None,
    })
}

const PARAMS: &str = r#"
struct P { a: u32, b: u32, c: u32, d: u32, e: u32, f: u32, g: u32, h: u32,
           i: u32, j: u32, k: u32, l: u32, m: u32, n: u32, o: u32, q: u32 }
"#;

/// Matrix product and row lookup for weights of type `ty` (entry points `matmul` and `get_rows`), or `None`
/// for a type the kernels do not dequantize.
///
/// `matmul`: `y[y_off + t*rows + r] (+)= sum_c W[r, c] * x[x_off + t*cols + c]` for `r < rows`, `t < n`;
/// invocation `(i, tile)` computes rows `i*rows_per_lane ..` for [`MATMUL_TILE`] tokens (dispatch
/// `rows / (WG * rows_per_lane)` workgroups in x, [`matmul_entry`] says why several rows); a block is
/// dequantized once into 8 `vec4`s and multiplied with each token's 32 activations (read as `vec4`s: `x_off` must be a multiple of 4,
/// `cols` is a multiple of 32). Params: `a` rows, `b` cols, `c` n, `d` x_off, `e` y_off, `f` accumulate (0/1).
/// `matvec`: the same with a tile of one token (decode; the matmul's tile would do 8x the work for one
/// token).
///
/// `get_rows`: `y[t*cols + c] = W[tokens[t], c]` (token embeddings); invocation `t * cols/32 + block`.
/// Params: `b` cols, `c` n.
pub fn matmul_source(ty: GgmlType, rows_per_lane: u32) -> Option<String> {
    let block = block_fn(ty)?;
    let mm = matmul_entry("matmul", MATMUL_TILE, rows_per_lane);
    let mv = matmul_entry("matvec", 1, rows_per_lane);
    Some(format!(
        r#"{PARAMS}
@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
@group(0) @binding(4) var<storage, read> tokens: array<u32>;

// 4 bytes at byte offset o (any alignment), little-endian.
fn ld(o: u32) -> u32 {{
    let i = o >> 2u;
    let sh = (o & 3u) * 8u;
    // Branch-free (lanes of one SIMD group may differ in alignment); the second word is read only when
    // needed so that the last block of the buffer never reads past its end.
    let hi = select(0u, w[min(i + 1u, arrayLength(&w) - 1u)] << ((32u - sh) & 31u), sh != 0u);
    return (w[i] >> sh) | hi;
}}

// The f16 at (even) byte offset o.
fn f16at(o: u32) -> f32 {{
    let v = w[o >> 2u] >> ((o & 2u) * 8u);
    return unpack2x16float(v & 0xffffu).x;
}}
{block}

{mm}
{mv}
@compute @workgroup_size({WG})
fn get_rows(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let cols = p.b;
    let nb = cols / 32u;
    let t = gid.x / nb;
    let b = gid.x % nb;
    if (t >= p.c) {{ return; }}
    var d: array<vec4<f32>, 8>;
    block(tokens[t] * nb + b, &d);
    for (var i = 0u; i < 8u; i++) {{
        for (var k = 0u; k < 4u; k++) {{ y[t * cols + b * 32u + 4u * i + k] = d[i][k]; }}
    }}
}}
"#
    ))
}

/// The matrix-product entry point `name`: each invocation computes `rpl` weight rows (rows `r*rpl ..`) for a
/// tile of `tile` tokens.
///
/// Every activation vector read from `x` is used for `rpl` rows: on SIMD-on-CPU drivers (llvmpipe, Mesa 22)
/// a storage load inside a loop is a per-lane gather (one scalar load per lane and component), which made
/// the activation loads, not the arithmetic, the cost of the one-row kernel (measured: prefill 1.3
/// tokens/s with them, 16.5 with them removed). On GPUs one row per invocation keeps more invocations busy.
/// Rows past `rows` compute a copy of the last row and skip the store; the token loops have a constant trip
/// count (the last tile re-reads its last token) so that compilers unroll them and keep the accumulators in
/// registers.
fn matmul_entry(name: &str, tile: u32, rpl: u32) -> String {
    let mut deq = String::new();
    let mut fmas = String::new();
    let mut sums = String::new();
    let mut stores = String::new();
    for k in 0..rpl {
        deq.push_str(&format!("        block(min(r0 + {k}u, rows - 1u) * nb + b, &d{k});\n"));
        fmas.push_str(&format!("                s{k} = fma(d{k}[i], xv, s{k});\n"));
        sums.push_str(&format!(
            "            acc[{k}u * {tile}u + t] += (s{k}.x + s{k}.y) + (s{k}.z + s{k}.w);\n"
        ));
        stores.push_str(&format!(
            "            if (r0 + {k}u < rows) {{ let yo = p.e + (t0 + t) * rows + r0 + {k}u; if (p.f != 0u) {{ y[yo] += acc[{k}u * {tile}u + t]; }} else {{ y[yo] = acc[{k}u * {tile}u + t]; }} }}\n"
        ));
    }
    let decl_d: String = (0..rpl).map(|k| format!("    var d{k}: array<vec4<f32>, 8>;\n")).collect();
    let decl_s: String = (0..rpl).map(|k| format!("            var s{k} = vec4<f32>(0.0);\n")).collect();
    format!(
        r#"
@compute @workgroup_size({WG})
fn {name}(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let rows = p.a;
    let cols = p.b;
    let n = p.c;
    let r0 = (wg.x * {WG}u + li) * {rpl}u;
    let t0 = wg.y * {tile}u;
    let nb = cols / 32u;
    var acc: array<f32, {acc_len}>;
{decl_d}    for (var b = 0u; b < nb; b++) {{
{deq}        for (var t = 0u; t < {tile}u; t++) {{
            let o = (p.d + min(t0 + t, n - 1u) * cols) / 4u + b * 8u;
{decl_s}            for (var i = 0u; i < 8u; i++) {{
                let xv = x[o + i];
{fmas}            }}
{sums}        }}
    }}
    for (var t = 0u; t < {tile}u; t++) {{
        if (t0 + t < n) {{
{stores}        }}
    }}
}}
"#,
        acc_len = tile * rpl
    )
}

/// RMSNorm, one workgroup per row: `out[t*d + i] = x[x_off + t*d + i] / sqrt(mean_i(x²) + eps) * w[i]`
/// (as `engine::ops::rmsnorm`). Params: `a` d, `b` x_off (elements), `c` eps (f32 bits).
pub fn rmsnorm_source() -> String {
    format!(
        r#"{PARAMS}
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: P;
var<workgroup> red: array<f32, {WG}>;

@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let d = p.a;
    let t = wg.x;
    let xo = p.b + t * d;
    var ss = 0.0;
    for (var i = li; i < d; i += {WG}u) {{ let v = x[xo + i]; ss = fma(v, v, ss); }}
    red[li] = ss;
    workgroupBarrier();
    for (var s = {WG}u / 2u; s > 0u; s >>= 1u) {{
        if (li < s) {{ red[li] += red[li + s]; }}
        workgroupBarrier();
    }}
    let scale = 1.0 / sqrt(red[0] / f32(d) + bitcast<f32>(p.c));
    for (var i = li; i < d; i += {WG}u) {{ out[t * d + i] = x[xo + i] * scale * w[i]; }}
}}
"#
    )
}

/// RoPE in place on `n` tokens of `n_heads` heads: token `t`'s head `h` starts at `off + t*stride + h*hd`;
/// pair `i < half` is `(2i, 2i+1)` (normal) or `(i, i+half)` (NeoX), rotated by `tab[t*half + i] = (cos, sin)`
/// (computed on the CPU in f64 as `engine::ops::rope_table`). Invocation `(t*n_heads + h)*half + i`.
/// Params: `a` n, `b` n_heads, `c` hd, `d` half, `e` off, `f` stride, `g` neox, `h` row width of the grid.
pub fn rope_source() -> String {
    format!(
        r#"{PARAMS}
@group(0) @binding(0) var<storage, read_write> x: array<f32>;
@group(0) @binding(1) var<storage, read> tab: array<f32>;
@group(0) @binding(2) var<uniform> p: P;

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let idx = gid.y * p.h + gid.x;
    let half = p.d;
    if (idx >= p.a * p.b * half) {{ return; }}
    let i = idx % half;
    let th = idx / half;
    let h = th % p.b;
    let t = th / p.b;
    let base = p.e + t * p.f + h * p.c;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.g != 0u) {{ a = base + i; b = base + i + half; }}
    let c = tab[2u * (t * half + i)];
    let s = tab[2u * (t * half + i) + 1u];
    let x0 = x[a];
    let x1 = x[b];
    x[a] = x0 * c - x1 * s;
    x[b] = x0 * s + x1 * c;
}}
"#
    )
}

/// Causal GQA attention with the KV cache, one workgroup per (query head `j`, token `t`): token `t` sits at
/// position `pos0 + t` and attends to cache rows `0..=pos0+t`; head `j` reads KV head `j / group`.
/// `out[t*n_head*hd + j*hd + i] = sum_p softmax_p(scale * q·k_p) v_p[i]`. Scores go through the scratch
/// buffer `sc` (`n_ctx` floats per (t, j)). Params: `a` pos0, `b` n_head, `c` group, `d` hd, `e` kvd
/// (cache row width), `f` n_ctx, `g` scale (f32 bits).
pub fn attention_source() -> String {
    format!(
        r#"{PARAMS}
@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> kc: array<f32>;
@group(0) @binding(2) var<storage, read> vc: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<storage, read_write> sc: array<f32>;
@group(0) @binding(5) var<uniform> p: P;
var<workgroup> red: array<f32, {WG}>;

@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {{
    let j = wg.x;
    let t = wg.y;
    let hd = p.d;
    let kvd = p.e;
    let len = p.a + t + 1u;
    let qo = (t * p.b + j) * hd;
    let ko = (j / p.c) * hd;
    let so = (t * p.b + j) * p.f;
    let scale = bitcast<f32>(p.g);
    var mx = -3.0e38;
    for (var s = li; s < len; s += {WG}u) {{
        var acc = 0.0;
        for (var i = 0u; i < hd; i++) {{ acc = fma(q[qo + i], kc[s * kvd + ko + i], acc); }}
        acc *= scale;
        sc[so + s] = acc;
        mx = max(mx, acc);
    }}
    red[li] = mx;
    workgroupBarrier();
    for (var s = {WG}u / 2u; s > 0u; s >>= 1u) {{
        if (li < s) {{ red[li] = max(red[li], red[li + s]); }}
        workgroupBarrier();
    }}
    let m = red[0];
    workgroupBarrier();
    var sum = 0.0;
    for (var s = li; s < len; s += {WG}u) {{
        let e = exp(sc[so + s] - m);
        sc[so + s] = e;
        sum += e;
    }}
    red[li] = sum;
    workgroupBarrier();
    for (var s = {WG}u / 2u; s > 0u; s >>= 1u) {{
        if (li < s) {{ red[li] += red[li + s]; }}
        workgroupBarrier();
    }}
    let inv = 1.0 / red[0];
    storageBarrier();
    for (var i = li; i < hd; i += {WG}u) {{
        var o = 0.0;
        for (var s = 0u; s < len; s++) {{ o = fma(sc[so + s], vc[s * kvd + ko + i], o); }}
        out[qo + i] = o * inv;
    }}
}}
"#
    )
}

/// SwiGLU: `g[i] = silu(g[i]) * u[i]` for `i < count`, `silu(z) = z / (1 + e^-z)`.
/// Params: `a` count, `h` row width of the grid.
pub fn swiglu_source() -> String {
    format!(
        r#"{PARAMS}
@group(0) @binding(0) var<storage, read_write> g: array<f32>;
@group(0) @binding(1) var<storage, read> u: array<f32>;
@group(0) @binding(2) var<uniform> p: P;

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
    let i = gid.y * p.h + gid.x;
    if (i >= p.a) {{ return; }}
    let z = g[i];
    g[i] = z / (1.0 + exp(-z)) * u[i];
}}
"#
    )
}
