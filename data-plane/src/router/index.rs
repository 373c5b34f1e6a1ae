//! The lookup structures that keep the cost of one match independent of the number of routes:
//! host buckets (exact host in a hash map, `*.suffix` and `prefix.*` wildcards in hash maps
//! probed once per label, and one bucket for routes without hosts), and inside each bucket a
//! compressed trie over prefix paths and over the literal prefixes of regex paths, walked once
//! along the request path.
//!
//! Matchers are numbered by rank (0 is the highest priority), so every candidate list is
//! sorted best-first and a search stops scanning a list as soon as it cannot beat the best
//! candidate found so far.
//!
//! Every bucket's trie lives in one set of flat arrays, built in one pass over the sorted
//! (bucket, key) list: a 10,000-route index is a handful of allocations.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::compile::{HostKind, Matcher, PathPattern};
use super::RouteRequest;

/// Matcher ids are ranks; u32 keeps the lists compact.
pub(super) type Rank = u32;

type Map<T> = HashMap<Box<str>, T, FxBuild>;

/// The root of a bucket that has no paths.
const NO_ROOT: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(super) struct Index {
    /// Host to bucket number.
    exact: Map<u32>,
    /// Keyed by `.ex.com` (from `*.ex.com`).
    suffix: Map<u32>,
    /// Keyed by `ex.` (from `ex.*`).
    prefix: Map<u32>,
    /// Bucket 0 holds the routes without hosts.
    buckets: Vec<Bucket>,
    trie: Trie,
}

/// The best candidate so far: its rank and the span of the path it matched (none for a
/// matcher without paths).
#[derive(Debug, Clone, Copy)]
pub(super) struct Best {
    pub rank: Rank,
    pub matched: Option<(usize, usize)>,
}

/// One path of one matcher, filed in one bucket.
#[derive(Debug, Clone, Copy)]
struct Entry<'m> {
    bucket: u32,
    rank: Rank,
    /// The first 16 bytes of `key`, zero-padded, big-endian: orders like `key` except that it
    /// cannot tell a key from the same key followed by zero bytes, so equal heads compare the
    /// keys. Sorting compares this inline instead of chasing 20,000 key pointers.
    head: u128,
    key: &'m [u8],
    regex: bool,
}

fn head(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

impl Index {
    /// Builds the index; `matchers` must already be sorted best-first (index == rank).
    pub fn build(matchers: &[Matcher]) -> Index {
        let mut maps: [Map<u32>; 3] = Default::default();
        let mut bucket_count = 1u32;
        let mut entries: Vec<Entry<'_>> = Vec::with_capacity(matchers.len() * 2);
        // (bucket, rank) of the matchers without paths.
        let mut pathless: Vec<(u32, Rank)> = Vec::new();
        let mut host_buckets: Vec<u32> = Vec::new();
        for (rank, m) in matchers.iter().enumerate() {
            let rank = Rank::try_from(rank).unwrap_or(Rank::MAX);
            host_buckets.clear();
            if m.hosts.is_empty() {
                host_buckets.push(0);
            }
            for h in m.hosts.iter() {
                let map = match h.kind {
                    HostKind::Exact => &mut maps[0],
                    HostKind::Suffix => &mut maps[1],
                    HostKind::Prefix => &mut maps[2],
                };
                let b = match map.get(&*h.text) {
                    Some(&b) => b,
                    None => {
                        map.insert(h.text.clone(), bucket_count);
                        bucket_count += 1;
                        bucket_count - 1
                    }
                };
                host_buckets.push(b);
            }
            for &bucket in &host_buckets {
                if m.paths.is_empty() {
                    pathless.push((bucket, rank));
                }
                for p in m.paths.iter() {
                    let (key, regex) = match p {
                        PathPattern::Prefix(text) => (text.as_bytes(), false),
                        PathPattern::Regex { literal, .. } => (literal.as_bytes(), true),
                    };
                    entries.push(Entry {
                        bucket,
                        rank,
                        head: head(key),
                        key,
                        regex,
                    });
                }
            }
        }
        // Rank last: equal keys keep best-first order, and a matcher filed twice under one key
        // (two identical paths, or two hosts naming one bucket) lands next to itself.
        entries.sort_unstable_by(|a, b| {
            (a.bucket, a.head)
                .cmp(&(b.bucket, b.head))
                .then_with(|| a.key.cmp(b.key))
                .then(a.rank.cmp(&b.rank))
        });
        pathless.sort_unstable();
        pathless.dedup();

        let mut trie = Trie::default();
        let mut buckets = vec![
            Bucket {
                root: NO_ROOT,
                pathless: (0, 0),
            };
            bucket_count as usize
        ];
        for group in pathless.chunk_by(|a, b| a.0 == b.0) {
            let start = trie.ranks.len();
            trie.ranks.extend(group.iter().map(|&(_, rank)| rank));
            buckets[group[0].0 as usize].pathless = range(start, group.len());
        }
        for group in entries.chunk_by(|a, b| a.bucket == b.bucket) {
            buckets[group[0].bucket as usize].root = trie.add(group);
        }
        trie.shrink_to_fit();
        let [mut exact, mut suffix, mut prefix] = maps;
        exact.shrink_to_fit();
        suffix.shrink_to_fit();
        prefix.shrink_to_fit();
        Index {
            exact,
            suffix,
            prefix,
            buckets,
            trie,
        }
    }

    /// The highest-priority matcher for `req`, with the length of its matched path text.
    pub fn search(&self, matchers: &[Matcher], req: &RouteRequest<'_>) -> Option<Best> {
        let mut best = None;
        let bucket = |b: u32, best: &mut Option<Best>| {
            if let Some(b) = self.buckets.get(b as usize) {
                self.trie.search(b, matchers, req, best);
            }
        };
        bucket(0, &mut best);
        if let Some(&b) = self.exact.get(req.host) {
            bucket(b, &mut best);
        }
        if !self.suffix.is_empty() || !self.prefix.is_empty() {
            for (i, _) in req.host.match_indices('.') {
                if let Some(&b) = self.suffix.get(&req.host[i..]) {
                    bucket(b, &mut best);
                }
                if let Some(&b) = self.prefix.get(&req.host[..=i]) {
                    bucket(b, &mut best);
                }
            }
        }
        best
    }
}

/// A bucket: its trie root and the matchers without paths (a range of `Trie::ranks`).
#[derive(Debug, Clone, Copy)]
struct Bucket {
    root: u32,
    pathless: (u32, u32),
}

/// Compressed, packed tries of every bucket. Ranges are (start, len) into the arrays.
#[derive(Debug, Default)]
struct Trie {
    nodes: Vec<Node>,
    /// Per node, sorted by first byte.
    edges: Vec<(u8, u32)>,
    ranks: Vec<Rank>,
    labels: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Node {
    /// The bytes spelled by the edge into this node.
    label: (u32, u32),
    edges: (u32, u32),
    /// Matchers with a prefix path equal to the text spelled so far.
    prefixes: (u32, u32),
    /// Matchers with a regex path whose literal prefix is the text spelled so far.
    regexes: (u32, u32),
}

fn range(start: usize, len: usize) -> (u32, u32) {
    (
        u32::try_from(start).unwrap_or(u32::MAX),
        u32::try_from(len).unwrap_or(0),
    )
}

fn slice<T>(arena: &[T], (start, len): (u32, u32)) -> &[T] {
    arena
        .get(start as usize..start as usize + len as usize)
        .unwrap_or(&[])
}

impl Trie {
    /// Adds the trie of one bucket's entries, sorted by (key, rank); returns its root. A node
    /// exists where a key ends or where keys part: chains without either are one edge label.
    fn add(&mut self, entries: &[Entry<'_>]) -> u32 {
        let root = self.nodes.len();
        self.nodes.push(Node::default());
        // (node, entries range, depth): every entry in the range starts with the text the
        // node spells, which is `depth` bytes long.
        let mut todo = vec![(root, 0usize, entries.len(), 0usize)];
        while let Some((n, lo, hi, depth)) = todo.pop() {
            let es = &entries[lo..hi];
            // Keys that end here sort first.
            let here = es.iter().take_while(|e| e.key.len() == depth).count();
            let prefixes = self.push_ranks(es[..here].iter().filter(|e| !e.regex));
            let regexes = self.push_ranks(es[..here].iter().filter(|e| e.regex));
            let edges_start = self.edges.len();
            let mut j = here;
            while j < es.len() {
                let byte = es[j].key[depth];
                let k = j + es[j..].iter().take_while(|e| e.key[depth] == byte).count();
                let (first, last) = (es[j].key, es[k - 1].key);
                let common = first[depth..]
                    .iter()
                    .zip(&last[depth..])
                    .take_while(|(a, b)| a == b)
                    .count();
                let child = self.nodes.len();
                let label = range(self.labels.len(), common);
                self.labels.extend_from_slice(&first[depth..depth + common]);
                self.nodes.push(Node {
                    label,
                    ..Node::default()
                });
                self.edges.push((byte, child as u32));
                todo.push((child, lo + j, lo + k, depth + common));
                j = k;
            }
            let node = &mut self.nodes[n];
            node.prefixes = prefixes;
            node.regexes = regexes;
            node.edges = range(edges_start, self.edges.len() - edges_start);
        }
        root as u32
    }

    /// Appends the ranks of `entries` (in rank order) without repeats.
    fn push_ranks<'e, 'm: 'e>(
        &mut self,
        entries: impl Iterator<Item = &'e Entry<'m>>,
    ) -> (u32, u32) {
        let start = self.ranks.len();
        for e in entries {
            if self.ranks.len() == start || self.ranks.last() != Some(&e.rank) {
                self.ranks.push(e.rank);
            }
        }
        range(start, self.ranks.len() - start)
    }

    fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        self.edges.shrink_to_fit();
        self.ranks.shrink_to_fit();
        self.labels.shrink_to_fit();
    }

    fn search(
        &self,
        bucket: &Bucket,
        matchers: &[Matcher],
        req: &RouteRequest<'_>,
        best: &mut Option<Best>,
    ) {
        let beats = |rank: Rank, best: &Option<Best>| best.is_none_or(|b| rank < b.rank);
        let path = req.path.as_bytes();
        let mut n = bucket.root as usize;
        let mut depth = 0usize;
        while let Some(node) = self.nodes.get(n) {
            for &rank in slice(&self.ranks, node.prefixes) {
                if !beats(rank, best) {
                    break;
                }
                if matchers[rank as usize].matches_non_path(req) {
                    *best = Some(Best {
                        rank,
                        matched: Some((0, depth)),
                    });
                    break;
                }
            }
            for &rank in slice(&self.ranks, node.regexes) {
                if !beats(rank, best) {
                    break;
                }
                let m = &matchers[rank as usize];
                if !m.matches_non_path(req) {
                    continue;
                }
                if let Some(span) = m.match_regex(req.path) {
                    *best = Some(Best {
                        rank,
                        matched: Some(span),
                    });
                    break;
                }
            }
            let Some(&b) = path.get(depth) else { break };
            let edges = slice(&self.edges, node.edges);
            let Ok(i) = edges.binary_search_by_key(&b, |e| e.0) else {
                break;
            };
            let child = edges[i].1 as usize;
            let Some(cn) = self.nodes.get(child) else {
                break;
            };
            let label = slice(&self.labels, cn.label);
            // Labels are short: a byte loop beats a call to memcmp.
            let rest = &path[depth..];
            if rest.len() < label.len() || !label.iter().zip(rest).all(|(a, b)| a == b) {
                break;
            }
            depth += label.len();
            n = child;
        }
        for &rank in slice(&self.ranks, bucket.pathless) {
            if !beats(rank, best) {
                break;
            }
            if matchers[rank as usize].matches_non_path(req) {
                *best = Some(Best {
                    rank,
                    matched: None,
                });
                break;
            }
        }
    }
}

/// FxHash (rustc's): host lookups hash request text on every match and SipHash dominated
/// the host-based benchmark. Flooding is not a concern: the keys come from config, a request
/// only probes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct FxBuild;

pub(super) struct Fx(u64);

impl BuildHasher for FxBuild {
    type Hasher = Fx;
    fn build_hasher(&self) -> Fx {
        Fx(0)
    }
}

impl Fx {
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, b: u8) {
        self.add(u64::from(b));
    }
    fn finish(&self) -> u64 {
        // The multiplies leave each bit depending only on the input bits at or below it, and
        // the table indexes by the low bits: keys that differ only in their last bytes (UUIDs
        // are stored big-endian, so `Uuid::from_u128(n)` varies at the end) would all collide.
        // SplitMix64's finaliser spreads every bit over the whole word.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
