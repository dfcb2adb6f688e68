//! Wait-for graphs: goid -> the goids it waits for.
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub type Edges = BTreeMap<u64, BTreeSet<u64>>;

/// Everything `start` reaches, directly or indirectly (`start` itself only if on a cycle).
pub fn reachable(start: u64, edges: &Edges) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<u64> = edges.get(&start).into_iter().flatten().copied().collect();
    while let Some(g) = todo.pop() {
        if seen.insert(g) {
            todo.extend(edges.get(&g).into_iter().flatten().copied());
        }
    }
    seen
}

/// Strongly connected components (Tarjan's algorithm, iterative so deep graphs cannot overflow
/// the stack).
pub fn strongly_connected(edges: &Edges) -> Vec<BTreeSet<u64>> {
    struct Node {
        index: usize,
        low: usize,
        on_stack: bool,
    }
    let mut nodes: HashMap<u64, Node> = HashMap::new();
    let mut stack: Vec<u64> = Vec::new();
    let mut components = Vec::new();
    for &root in edges.keys() {
        if nodes.contains_key(&root) {
            continue;
        }
        // (node, its successors still to visit)
        let mut work: Vec<(u64, Vec<u64>)> = Vec::new();
        let visit = |v: u64, nodes: &mut HashMap<u64, Node>, stack: &mut Vec<u64>, work: &mut Vec<(u64, Vec<u64>)>| {
            let index = nodes.len();
            nodes.insert(v, Node { index, low: index, on_stack: true });
            stack.push(v);
            work.push((v, edges.get(&v).into_iter().flatten().copied().collect()));
        };
        visit(root, &mut nodes, &mut stack, &mut work);
        while let Some((v, next)) = work.last_mut() {
            let v = *v;
            if let Some(w) = next.pop() {
                match nodes.get(&w) {
                    None if edges.contains_key(&w) => visit(w, &mut nodes, &mut stack, &mut work),
                    Some(n) if n.on_stack => {
                        let wi = n.index;
                        let nv = nodes.get_mut(&v).expect("visited");
                        nv.low = nv.low.min(wi);
                    }
                    _ => {}
                }
                continue;
            }
            work.pop();
            let (low, index) = (nodes[&v].low, nodes[&v].index);
            if let Some((parent, _)) = work.last() {
                let np = nodes.get_mut(parent).expect("visited");
                np.low = np.low.min(low);
            }
            if low == index {
                let mut component = BTreeSet::new();
                while let Some(w) = stack.pop() {
                    nodes.get_mut(&w).expect("visited").on_stack = false;
                    component.insert(w);
                    if w == v {
                        break;
                    }
                }
                components.push(component);
            }
        }
    }
    components
}

/// A cycle inside `within` (a strongly connected set), from its smallest goid, following the
/// smallest next goid inside it each step; shorter than `within` when a smaller cycle closes first.
pub fn cycle_from(within: &BTreeSet<u64>, edges: &Edges) -> Vec<u64> {
    let Some(&start) = within.first() else { return Vec::new() };
    let mut path = vec![start];
    loop {
        let at = *path.last().expect("non-empty");
        let Some(&next) = edges.get(&at).into_iter().flatten().find(|h| within.contains(h)) else { return path };
        if let Some(i) = path.iter().position(|&g| g == next) {
            return path.split_off(i);
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_of_a_long_chain_and_a_cycle() {
        let mut edges: BTreeMap<u64, BTreeSet<u64>> = (0..10_000).map(|i| (i, BTreeSet::from([i + 1]))).collect();
        edges.insert(10_000, BTreeSet::from([9_998]));
        let sccs = strongly_connected(&edges);
        let big: Vec<_> = sccs.iter().filter(|c| c.len() > 1).collect();
        assert_eq!(big, vec![&BTreeSet::from([9_998, 9_999, 10_000])]);
        assert_eq!(cycle_from(big[0], &edges), vec![9_998, 9_999, 10_000]);
    }
}
