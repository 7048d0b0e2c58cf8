// What a conv derives from its weights alone, made once per layout and kept in the caller's
// qat_i8_conv_cache (int8_kernels.h) for the next call.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "int8_internal.h"

struct qat_i8_conv_cache {
    pthread_mutex_t lock;
    qat_i8_prepared_weights *entries;  // a list: entries are never moved or freed before the cache
};

qat_i8_conv_cache *qat_i8_conv_cache_create(void) {
    qat_i8_conv_cache *cache = qat_i8_checked_malloc(sizeof *cache);
    pthread_mutex_init(&cache->lock, NULL);
    cache->entries = NULL;
    return cache;
}

static void free_entry(qat_i8_prepared_weights *e) {
    free(e->a);
    free(e->corr);
    free(e->a_pairs);
    free(e->winograd_u);
    free(e);
}

void qat_i8_conv_cache_free(qat_i8_conv_cache *cache) {
    if (!cache) return;
    for (qat_i8_prepared_weights *e = cache->entries, *next; e; e = next) {
        next = e->next;
        free_entry(e);
    }
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}

static qat_i8_prepared_weights *prepare(const qat_i8_weights_key *key, const int8_t *weight, const int32_t *bias) {
    qat_i8_prepared_weights *e = qat_i8_checked_malloc(sizeof *e);
    memset(e, 0, sizeof *e);
    e->key = *key;
    const int group_c = key->c / key->groups, kk = group_c * key->kh * key->kw, k4 = (kk + 3) / 4;
    switch (key->layout) {
    case QAT_I8_WEIGHTS_ROW_TAPS:
        e->a = qat_i8_pack_weights_row_taps(weight, bias, key->oc, key->c, key->kh, key->kw, key->x_zero, &e->corr);
        break;
    case QAT_I8_WEIGHTS_BLOCKED:
        e->a = qat_i8_pack_weights_blocked(weight, bias, key->oc, group_c, key->kh, key->kw, key->x_zero, &e->corr);
        break;
    case QAT_I8_WEIGHTS_PLAIN:
        e->a = qat_i8_pack_weights(weight, bias, key->oc, kk, k4, key->x_zero, &e->corr);
        break;
    }
    if (key->pairs) e->a_pairs = qat_i8_avx2_weight_pairs(e->a, (size_t)key->oc * k4);
    if (key->winograd) e->winograd_u = qat_i8_winograd_weights(weight, key->oc, key->c);
    return e;
}

const qat_i8_prepared_weights *qat_i8_weights_prepared(qat_i8_conv_cache *cache, const qat_i8_weights_key *key,
                                                      const int8_t *weight, const int32_t *bias) {
    if (!cache) return prepare(key, weight, bias);
    pthread_mutex_lock(&cache->lock);
    qat_i8_prepared_weights *e = cache->entries;
    while (e && memcmp(&e->key, key, sizeof *key) != 0) e = e->next;
    if (!e) {
        e = prepare(key, weight, bias);
        e->next = cache->entries;
        cache->entries = e;
    }
    pthread_mutex_unlock(&cache->lock);
    return e;
}

void qat_i8_weights_release(qat_i8_conv_cache *cache, const qat_i8_prepared_weights *prepared) {
    if (!cache) free_entry((qat_i8_prepared_weights *)prepared);
}
