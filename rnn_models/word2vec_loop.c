/* word2vec's SGD loop over one range of centre words, updating the tables in place.
 *
 * The same pairs, noise and objective as Word2Vec.sgd_step in skipgram.py, but applied pair by
 * pair like word2vec.c: each update uses the tables as the previous pair left them. Threads that
 * call it on different ranges of one stream share the tables without locks (Hogwild), as
 * word2vec.c's and gensim's threads do. Built by rnn_models/word2vec_native.py.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Helpers are inlined into word2vec_sgd so that they are compiled for each of its target clones
 * (a helper left out of line would be built for the baseline instruction set only). */
#define INLINE static inline __attribute__((always_inline))

/* The step's factor label - sigmoid(x) for one logit, adding its log-loss softplus(+-x) to *loss.
 * One exp of -|x| serves both; logf(1 + e) stands for log1pf(e), which costs several times more
 * and differs by under 1e-7. */
INLINE float logistic(float x, int label, double *loss) {
    float e = expf(-fabsf(x)), sigmoid = (x >= 0 ? 1.0f : e) / (1.0f + e);
    *loss += fmaxf(label ? -x : x, 0.0f) + logf(1.0f + e);
    return (float)label - sigmoid;
}

/* One input vector (h) against the centre's output row (label 1) and its noise rows (label 0):
 * updates the output rows (and NCE biases) and adds the input's gradient step to grad. */
INLINE double score(const float *restrict h, float *restrict grad, float *out, float *bias,
                           const float *log_kq, int64_t dim, int64_t centre, const int64_t *noise,
                           int64_t negatives, float lr, int nce) {
    double loss = 0;
    for (int64_t d = 0; d <= negatives; d++) {
        int64_t target = d == 0 ? centre : noise[d - 1];
        float *row = out + target * dim;
        float f = 0;
#pragma omp simd reduction(+ : f)
        for (int64_t c = 0; c < dim; c++) f += h[c] * row[c];
        if (nce) f += bias[target] - log_kq[target];
        float g = lr * logistic(f, d == 0, &loss);
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) {
            grad[c] += g * row[c];
            row[c] += g * h[c];
        }
        if (nce) bias[target] += g;
    }
    return loss;
}

/* Dot products of h with rows r[0..count-1] (count <= 4), several at once so that the reductions
 * overlap instead of each waiting on its own chain. */
INLINE void dots(const float *restrict h, const float *const *r, int64_t count, int64_t dim, float *f) {
    if (count == 4) {
        const float *r0 = r[0], *r1 = r[1], *r2 = r[2], *r3 = r[3];
        float a = 0, b = 0, c2 = 0, d = 0;
#pragma omp simd reduction(+ : a, b, c2, d)
        for (int64_t c = 0; c < dim; c++) {
            a += h[c] * r0[c];
            b += h[c] * r1[c];
            c2 += h[c] * r2[c];
            d += h[c] * r3[c];
        }
        f[0] = a, f[1] = b, f[2] = c2, f[3] = d;
    } else if (count >= 2) {  /* 2, or the first 2 of 3 */
        const float *r0 = r[0], *r1 = r[1];
        float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
        for (int64_t c = 0; c < dim; c++) {
            a += h[c] * r0[c];
            b += h[c] * r1[c];
        }
        f[0] = a, f[1] = b;
    }
    if (count == 1 || count == 3) {
        const float *r0 = r[count - 1];
        float a = 0;
#pragma omp simd reduction(+ : a)
        for (int64_t c = 0; c < dim; c++) a += h[c] * r0[c];
        f[count - 1] = a;
    }
}

/* Ask for a row to be brought into cache ahead of its use. */
INLINE void fetch(const float *row, int64_t dim) {
    for (int64_t c = 0; c < dim; c += 16) __builtin_prefetch(row + c);
}

/* y += sum of a[k] x[k] over k < count, four rows per pass over y. */
INLINE void add_scaled(float *restrict y, const float *const *x, const float *a, int64_t count, int64_t dim) {
    int64_t k = 0;
    for (; k + 4 <= count; k += 4) {
        const float *x0 = x[k], *x1 = x[k + 1], *x2 = x[k + 2], *x3 = x[k + 3];
        float a0 = a[k], a1 = a[k + 1], a2 = a[k + 2], a3 = a[k + 3];
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) y[c] += a0 * x0[c] + a1 * x1[c] + a2 * x2[c] + a3 * x3[c];
    }
    if (k + 2 <= count) {
        const float *x0 = x[k], *x1 = x[k + 1];
        float a0 = a[k], a1 = a[k + 1];
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) y[c] += a0 * x0[c] + a1 * x1[c];
        k += 2;
    }
    if (k < count) {
        const float *x0 = x[k];
        float a0 = a[k];
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) y[c] += a0 * x0[c];
    }
}

/* One centre's window as a block (pWord2Vec's matrix form, Ji et al. 2016): the m window words'
 * input rows H against the centre's output row and its noise rows O (t = negatives + 1 of them).
 * Scores F = H O^T and steps G = lr (label - sigmoid(F)) come from the tables as the previous
 * centre left them; then O += G^T H and H += G O, each from the other's values before the step
 * (the summed gradient of the window, as the tensor step takes it for a batch of one centre).
 * work holds m * (t + dim) floats. */
INLINE double window_block(float *in, float *out, float *bias, const float *log_kq, int64_t dim,
                           const int64_t *inputs, int64_t m, int64_t centre, const int64_t *noise,
                           int64_t negatives, float lr, int nce, float *work) {
    int64_t t = negatives + 1;
    float *g = work, *dh = work + m * t;
    const float *rows[t];
    int64_t targets[t];
    double loss = 0;
    for (int64_t o = 0; o < t; o++) {
        targets[o] = o == 0 ? centre : noise[o - 1];
        rows[o] = out + targets[o] * dim;
    }
    /* scores and steps */
    for (int64_t r = 0; r < m; r++) {
        const float *h = in + inputs[r] * dim;
        float *f = g + r * t;
        for (int64_t o = 0; o < t; o += 4) dots(h, rows + o, t - o < 4 ? t - o : 4, dim, f + o);
        for (int64_t o = 0; o < t; o++) {
            float x = f[o] + (nce ? bias[targets[o]] - log_kq[targets[o]] : 0.0f);
            f[o] = lr * logistic(x, o == 0, &loss);
        }
    }
    /* the inputs' steps G O, from the output rows before their step */
    for (int64_t r = 0; r < m; r++) {
        memset(dh + r * dim, 0, dim * sizeof(float));
        add_scaled(dh + r * dim, rows, g + r * t, t, dim);
    }
    /* the output rows' steps G^T H, then the inputs' */
    const float *hs[m];
    float gt[m];
    for (int64_t r = 0; r < m; r++) hs[r] = in + inputs[r] * dim;
    for (int64_t o = 0; o < t; o++) {
        float step = 0;
        for (int64_t r = 0; r < m; r++) step += gt[r] = g[r * t + o];
        add_scaled(out + targets[o] * dim, hs, gt, m, dim);
        if (nce) bias[targets[o]] += step;
    }
    for (int64_t r = 0; r < m; r++) {
        float *h = in + inputs[r] * dim;
        const float *d = dh + r * dim;
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) h[c] += d[c];
    }
    return loss;
}

/* Centres lo..hi-1 of a stream of n tokens: centre i's window is the tokens at distance 1..reach[i]
 * in its own sentence. Skip-gram: each window word's input vector predicts the centre; CBOW: the
 * window's mean does, and each window word gets its share of the mean's step. Noise row of centre i:
 * noise[(i / noise_block) * negatives ...]. With by_window, skip-gram updates each centre's window
 * as one block (window_block) instead of pair by pair. work holds 2 * dim floats, and with by_window
 * 2 * window * (negatives + 1 + dim) more for the widest reach. Returns the summed loss and stores the
 * number of terms (pairs, or windows for CBOW) in *terms. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
double word2vec_sgd(float *in, float *out, float *bias, const float *log_kq, int64_t dim,
                    const int64_t *tokens, const int64_t *sentence, const int64_t *reach, int64_t n,
                    int64_t lo, int64_t hi, const int64_t *noise, int64_t negatives, int64_t noise_block,
                    float lr, int nce, int cbow, int by_window, float *work, int64_t *terms) {
    float *h = work, *grad = work + dim;
    double loss = 0;
    int64_t count = 0;
    for (int64_t i = lo; i < hi; i++) {
        int64_t first = i - reach[i] < 0 ? 0 : i - reach[i];
        int64_t last = i + reach[i] >= n ? n - 1 : i + reach[i];
        const int64_t *drawn = noise + (i / noise_block) * negatives;
        if (cbow) {
            int64_t size = 0;
            memset(h, 0, dim * sizeof(float));
            for (int64_t j = first; j <= last; j++) {
                if (j == i || sentence[j] != sentence[i]) continue;
                const float *v = in + tokens[j] * dim;
                for (int64_t c = 0; c < dim; c++) h[c] += v[c];
                size++;
            }
            if (size == 0) continue;
            for (int64_t c = 0; c < dim; c++) h[c] /= (float)size;
            memset(grad, 0, dim * sizeof(float));
            loss += score(h, grad, out, bias, log_kq, dim, tokens[i], drawn, negatives, lr, nce);
            for (int64_t j = first; j <= last; j++) {
                if (j == i || sentence[j] != sentence[i]) continue;
                float *v = in + tokens[j] * dim;
                for (int64_t c = 0; c < dim; c++) v[c] += grad[c] / (float)size;
            }
            count++;
        } else if (by_window) {
            if (i + 1 < hi) {  /* fetch the rows the next centre adds while this one computes */
                int64_t next = i + 1, far = i + 1 + reach[i + 1] < n ? i + 1 + reach[i + 1] : n - 1;
                fetch(in + tokens[i] * dim, dim);
                fetch(in + tokens[far] * dim, dim);
                fetch(out + tokens[next] * dim, dim);
                const int64_t *soon = noise + (next / noise_block) * negatives;
                for (int64_t d = 0; d < negatives; d++) fetch(out + soon[d] * dim, dim);
            }
            int64_t inputs[last - first + 1], m = 0;
            for (int64_t j = first; j <= last; j++)
                if (j != i && sentence[j] == sentence[i]) inputs[m++] = tokens[j];
            if (m == 0) continue;
            loss += window_block(in, out, bias, log_kq, dim, inputs, m, tokens[i], drawn, negatives, lr, nce,
                                 work + 2 * dim);
            count += m;
        } else {
            for (int64_t j = first; j <= last; j++) {
                if (j == i || sentence[j] != sentence[i]) continue;
                float *v = in + tokens[j] * dim;
                memset(grad, 0, dim * sizeof(float));
                loss += score(v, grad, out, bias, log_kq, dim, tokens[i], drawn, negatives, lr, nce);
                for (int64_t c = 0; c < dim; c++) v[c] += grad[c];
                count++;
            }
        }
    }
    *terms = count;
    return loss;
}
