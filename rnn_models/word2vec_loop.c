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

static inline float softplus(float x) { return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)); }

/* One input vector (h) against the centre's output row (label 1) and its noise rows (label 0):
 * updates the output rows (and NCE biases) and adds the input's gradient step to grad. */
static inline double score(const float *restrict h, float *restrict grad, float *out, float *bias,
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
        float label = d == 0 ? 1.0f : 0.0f;
        float g = lr * (label - 1.0f / (1.0f + expf(-f)));
        loss += d == 0 ? softplus(-f) : softplus(f);
#pragma omp simd
        for (int64_t c = 0; c < dim; c++) {
            grad[c] += g * row[c];
            row[c] += g * h[c];
        }
        if (nce) bias[target] += g;
    }
    return loss;
}

/* Centres lo..hi-1 of a stream of n tokens: centre i's window is the tokens at distance 1..reach[i]
 * in its own sentence. Skip-gram: each window word's input vector predicts the centre; CBOW: the
 * window's mean does, and each window word gets its share of the mean's step. Noise row of centre i:
 * noise[(i / noise_block) * negatives ...]. work holds 2 * dim floats. Returns the summed loss and
 * stores the number of terms (pairs, or windows for CBOW) in *terms. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
double word2vec_sgd(float *in, float *out, float *bias, const float *log_kq, int64_t dim,
                    const int64_t *tokens, const int64_t *sentence, const int64_t *reach, int64_t n,
                    int64_t lo, int64_t hi, const int64_t *noise, int64_t negatives, int64_t noise_block,
                    float lr, int nce, int cbow, float *work, int64_t *terms) {
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
