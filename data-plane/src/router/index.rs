//! The lookup structures that keep the cost of one match independent of the number of routes:
//! host buckets (exact host in a hash map, `*.suffix` and `prefix.*` wildcards in hash maps
//! probed once per label, and one bucket for routes without hosts), and inside each bucket a
//! byte trie over prefix paths and over the literal prefixes of regex paths, walked once along
//! the request path.
//!
//! Matchers are numbered by rank (0 is the highest priority), so every candidate list is
//! sorted best-first and a search stops scanning a list as soon as it cannot beat the best
//! candidate found so far.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use super::compile::{HostKind, Matcher, PathPattern};
use super::RouteRequest;

/// Matcher ids are ranks; u32 keeps the lists compact.
pub(super) type Rank = u32;

type Map<T> = HashMap<Box<str>, T, FxBuild>;

#[derive(Debug, Default)]
pub(super) struct Index {
    exact: Map<Bucket>,
    /// Keyed by `.ex.com` (from `*.ex.com`).
    suffix: Map<Bucket>,
    /// Keyed by `ex.` (from `ex.*`).
    prefix: Map<Bucket>,
    /// Routes without hosts.
    any: Bucket,
}

/// The best candidate so far: its rank and the span of the path it matched (none for a
/// matcher without paths).
#[derive(Debug, Clone, Copy)]
pub(super) struct Best {
    pub rank: Rank,
    pub matched: Option<(usize, usize)>,
}

impl Index {
    /// Builds the index; `matchers` must already be sorted best-first (index == rank).
    pub fn build(matchers: &[Matcher]) -> Index {
        let mut any = BucketBuilder::default();
        let mut maps: [Map<BucketBuilder>; 3] = Default::default();
        for (rank, m) in matchers.iter().enumerate() {
            let rank = Rank::try_from(rank).unwrap_or(Rank::MAX);
            if m.hosts.is_empty() {
                any.insert(rank, m);
                continue;
            }
            for h in m.hosts.iter() {
                let map = match h.kind {
                    HostKind::Exact => &mut maps[0],
                    HostKind::Suffix => &mut maps[1],
                    HostKind::Prefix => &mut maps[2],
                };
                map.entry(h.text.clone()).or_default().insert(rank, m);
            }
        }
        let finish = |m: Map<BucketBuilder>| -> Map<Bucket> {
            m.into_iter().map(|(k, b)| (k, b.finish())).collect()
        };
        let [exact, suffix, prefix] = maps;
        Index {
            exact: finish(exact),
            suffix: finish(suffix),
            prefix: finish(prefix),
            any: any.finish(),
        }
    }

    /// The highest-priority matcher for `req`, with the length of its matched path text.
    pub fn search(&self, matchers: &[Matcher], req: &RouteRequest<'_>) -> Option<Best> {
        let mut best = None;
        self.any.search(matchers, req, &mut best);
        if let Some(b) = self.exact.get(req.host) {
            b.search(matchers, req, &mut best);
        }
        if !self.suffix.is_empty() || !self.prefix.is_empty() {
            for (i, _) in req.host.match_indices('.') {
                if let Some(b) = self.suffix.get(&req.host[i..]) {
                    b.search(matchers, req, &mut best);
                }
                if let Some(b) = self.prefix.get(&req.host[..=i]) {
                    b.search(matchers, req, &mut best);
                }
            }
        }
        best
    }
}

/// A bucket while it is being built: a plain byte trie, one node per byte.
#[derive(Debug)]
struct BucketBuilder {
    nodes: Vec<BuildNode>,
    pathless: Vec<Rank>,
}

#[derive(Debug, Default)]
struct BuildNode {
    /// Sorted by byte.
    edges: Vec<(u8, u32)>,
    prefixes: Vec<Rank>,
    regexes: Vec<Rank>,
}

impl Default for BucketBuilder {
    fn default() -> Self {
        BucketBuilder {
            nodes: vec![BuildNode::default()],
            pathless: Vec::new(),
        }
    }
}

fn push_unique(list: &mut Vec<Rank>, rank: Rank) {
    // Insertion happens in rank order, so a duplicate (two hosts or paths of one matcher
    // landing on the same list) can only be the last element.
    if list.last() != Some(&rank) {
        list.push(rank);
    }
}

impl BucketBuilder {
    fn insert(&mut self, rank: Rank, m: &Matcher) {
        if m.paths.is_empty() {
            push_unique(&mut self.pathless, rank);
            return;
        }
        for p in m.paths.iter() {
            match p {
                PathPattern::Prefix(text) => {
                    let n = self.node_for(text.as_bytes());
                    push_unique(&mut self.nodes[n].prefixes, rank);
                }
                PathPattern::Regex { literal, .. } => {
                    let n = self.node_for(literal.as_bytes());
                    push_unique(&mut self.nodes[n].regexes, rank);
                }
            }
        }
    }

    fn node_for(&mut self, text: &[u8]) -> usize {
        let mut n = 0;
        for &b in text {
            n = match self.nodes[n].edges.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => self.nodes[n].edges[i].1 as usize,
                Err(i) => {
                    let child = self.nodes.len();
                    self.nodes.push(BuildNode::default());
                    self.nodes[n].edges.insert(i, (b, child as u32));
                    child
                }
            };
        }
        n
    }

    /// Compresses chains of single-child nodes without candidates into one labelled edge
    /// (a radix tree) and packs everything into flat arrays, so a walk touches a handful of
    /// nodes and little memory even with 10,000 paths.
    fn finish(self) -> Bucket {
        let mut out = Bucket {
            nodes: Vec::new(),
            edges: Vec::new(),
            ranks: Vec::new(),
            labels: Vec::new(),
            pathless: self.pathless.clone(),
        };
        out.nodes.push(Node::default());
        // (builder node, compressed node) pairs still to lay out.
        let mut todo = vec![(0usize, 0usize)];
        while let Some((b, c)) = todo.pop() {
            let src = &self.nodes[b];
            let prefixes = push_range(&mut out.ranks, &src.prefixes);
            let regexes = push_range(&mut out.ranks, &src.regexes);
            let edges_start = out.edges.len();
            for &(byte, mut child) in &src.edges {
                let label_start = out.labels.len();
                out.labels.push(byte);
                loop {
                    let n = &self.nodes[child as usize];
                    if n.edges.len() != 1 || !n.prefixes.is_empty() || !n.regexes.is_empty() {
                        break;
                    }
                    out.labels.push(n.edges[0].0);
                    child = n.edges[0].1;
                }
                let cn = out.nodes.len();
                out.nodes.push(Node {
                    label: (label_start as u32, (out.labels.len() - label_start) as u32),
                    ..Node::default()
                });
                out.edges.push((byte, cn as u32));
                todo.push((child as usize, cn));
            }
            let node = &mut out.nodes[c];
            node.prefixes = prefixes;
            node.regexes = regexes;
            node.edges = (edges_start as u32, (out.edges.len() - edges_start) as u32);
        }
        out
    }
}

fn push_range(arena: &mut Vec<Rank>, items: &[Rank]) -> (u32, u32) {
    let start = arena.len();
    arena.extend_from_slice(items);
    (start as u32, items.len() as u32)
}

/// A compressed, packed trie. Ranges are (start, len) into the arrays.
#[derive(Debug, Default)]
struct Bucket {
    nodes: Vec<Node>,
    /// Per node, sorted by first byte.
    edges: Vec<(u8, u32)>,
    ranks: Vec<Rank>,
    labels: Vec<u8>,
    /// Matchers without paths.
    pathless: Vec<Rank>,
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

fn slice<T>(arena: &[T], (start, len): (u32, u32)) -> &[T] {
    arena
        .get(start as usize..start as usize + len as usize)
        .unwrap_or(&[])
}

impl Bucket {
    fn search(&self, matchers: &[Matcher], req: &RouteRequest<'_>, best: &mut Option<Best>) {
        let beats = |rank: Rank, best: &Option<Best>| best.is_none_or(|b| rank < b.rank);
        let path = req.path.as_bytes();
        let mut n = 0usize;
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
            if !path[depth..].starts_with(label) {
                break;
            }
            depth += label.len();
            n = child;
        }
        for &rank in &self.pathless {
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
        self.0
    }
}
