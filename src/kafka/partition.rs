//! Which partition a record goes to: Kafka's default for keyed records (the Java client's
//! `murmur2` of the key, made positive, modulo the partition count), computed by recflow itself
//! so that every run places the same record in the same partition whatever librdkafka is told,
//! which exactly-once output relies on (see [`crate::sink::kafka`]).

/// Kafka's 32-bit MurmurHash2, as the Java client's `Utils.murmur2` computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `partitions` that a record with `key` goes to: where a Java producer with
/// the default partitioner puts it. A record without a key is placed by its `payload` the same
/// way (dead letters), so it too always lands in the same partition.
pub fn partition_of(key: Option<&[u8]>, payload: Option<&[u8]>, partitions: i32) -> i32 {
    let hashed = murmur2(key.or(payload).unwrap_or_default());
    (hashed & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values Apache Kafka's own tests pin for `Utils.murmur2`.
    #[test]
    fn murmur2_is_the_java_clients() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
        ];
        for (data, expected) in cases {
            assert_eq!(murmur2(data), expected, "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn a_key_goes_to_one_partition_in_range() {
        for key in ["alice", "42", "hot_items/1700000100", ""] {
            let p = partition_of(Some(key.as_bytes()), Some(b"payload"), 3);
            assert!((0..3).contains(&p));
            assert_eq!(p, partition_of(Some(key.as_bytes()), None, 3), "the payload does not count beside a key");
        }
        assert_eq!(partition_of(None, Some(b"21"), 7), partition_of(Some(b"21"), None, 7));
        assert_eq!(partition_of(None, None, 5), partition_of(Some(b""), None, 5));
    }
}
