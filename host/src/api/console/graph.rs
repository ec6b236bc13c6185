//! The run page's DAG drawing: steps laid out in columns by dependency
//! level, edges routed so that they never pass through a step's box.
//!
//! - A step's level is the length of the longest dependency path to it
//!   (steps that need nothing are level 0); every edge goes from a lower
//!   column to a higher one.
//! - An edge that skips columns gets a *waypoint* slot in every column it
//!   crosses, reserved for it alone (the classic layered-drawing dummy
//!   node), so inside a column it runs through its own free band.
//! - Between two adjacent columns an edge is a curve whose control points
//!   stay inside the gap between them, where no box is.
//! - Rows within a column are ordered by the barycentre of their
//!   neighbours (a few sweeps each way) to keep crossings down.
//!
//! Pure: no store, no HTML; `console::runs` turns a [`Layout`] into SVG.

use serde::Serialize;

use crate::workflow::graph::Dag;

/// Width of a step's box.
pub(crate) const NODE_W: f64 = 168.0;
/// Height of a step's box.
pub(crate) const NODE_H: f64 = 46.0;
/// Height of an edge's waypoint slot in a column it crosses.
const WAYPOINT_H: f64 = 14.0;
/// Horizontal gap between columns (room for the curves and their labels).
const GAP_X: f64 = 72.0;
/// Vertical gap between slots of one column.
const GAP_Y: f64 = 18.0;
/// Margin around the drawing.
const PAD: f64 = 12.0;
/// Barycentre sweeps (each: left to right, then right to left).
const SWEEPS: usize = 4;

/// Where everything goes, in SVG user units.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Layout {
    /// Total width.
    pub width: f64,
    /// Total height.
    pub height: f64,
    /// One box per step, in the steps' order.
    pub nodes: Vec<NodeBox>,
    /// One path per dependency.
    pub edges: Vec<EdgePath>,
}

/// A step's box.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeBox {
    /// The step's position in the workflow.
    pub index: usize,
    /// Its column.
    pub level: usize,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

impl NodeBox {
    fn right(&self) -> f64 {
        self.x + self.w
    }

    fn mid_y(&self) -> f64 {
        self.y + self.h / 2.0
    }
}

/// One dependency drawn: from the needed step's right side to the
/// dependent's left side, through its waypoints.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EdgePath {
    /// The step waited for.
    pub from: usize,
    /// The step that waits.
    pub to: usize,
    /// The handle the dependent needs (`then`), if any: the edge's label.
    pub handle: Option<String>,
    /// The polyline the curve follows: start, two points per crossed
    /// column (its waypoint's left and right end), end.
    pub points: Vec<(f64, f64)>,
    /// SVG path data: straight inside a column, a curve between columns.
    pub d: String,
    /// Where the label goes (the middle of the first gap).
    pub label: (f64, f64),
}

/// One slot of a column: a step's box or an edge's waypoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Step(usize),
    /// Edge number, and which of its crossed columns.
    Waypoint(usize),
}

/// Lay out `dag` (whose steps are `0..dag.order.len()`).
pub(crate) fn layout(dag: &Dag) -> Layout {
    let n = dag.order.len();
    let mut level = vec![0usize; n];
    for &i in &dag.order {
        level[i] = dag.deps[i]
            .iter()
            .map(|d| level[d.step] + 1)
            .max()
            .unwrap_or(0);
    }
    let columns_n = level.iter().copied().max().map_or(0, |m| m + 1);
    let mut columns: Vec<Vec<Slot>> = vec![Vec::new(); columns_n];
    for &i in &dag.order {
        columns[level[i]].push(Slot::Step(i));
    }
    // Edges, each with a waypoint slot in every column strictly between its ends.
    let mut edges: Vec<(usize, usize, Option<String>)> = Vec::new();
    for &to in &dag.order {
        for dep in &dag.deps[to] {
            let edge = edges.len();
            edges.push((dep.step, to, dep.handle.clone()));
            for column in columns.iter_mut().take(level[to]).skip(level[dep.step] + 1) {
                column.push(Slot::Waypoint(edge));
            }
        }
    }
    order_columns(&mut columns, &edges, &level);
    place(&columns, &edges, n)
}

/// Reorder each column by the mean row of its neighbours in the column
/// before (forward sweep) or after (backward sweep).
fn order_columns(
    columns: &mut [Vec<Slot>],
    edges: &[(usize, usize, Option<String>)],
    level: &[usize],
) {
    // The neighbours of a slot in an adjacent column, as slots.
    let neighbours = |slot: Slot, toward: isize, columns: &[Vec<Slot>], col: usize| -> Vec<f64> {
        let target = col as isize + toward;
        if target < 0 || target as usize >= columns.len() {
            return Vec::new();
        }
        let other = &columns[target as usize];
        let row_of = |s: Slot| other.iter().position(|o| *o == s).map(|p| p as f64);
        let mut rows = Vec::new();
        for (e, (from, to, _)) in edges.iter().enumerate() {
            // The slot this edge occupies in column `c` (a step or its waypoint).
            let at = |c: usize| -> Option<Slot> {
                if c == level[*from] {
                    Some(Slot::Step(*from))
                } else if c == level[*to] {
                    Some(Slot::Step(*to))
                } else if c > level[*from] && c < level[*to] {
                    Some(Slot::Waypoint(e))
                } else {
                    None
                }
            };
            if at(col) == Some(slot)
                && let Some(there) = at(target as usize)
                && let Some(row) = row_of(there)
            {
                rows.push(row);
            }
        }
        rows
    };
    for _ in 0..SWEEPS {
        for (toward, range) in [(-1isize, false), (1isize, true)] {
            let cols: Vec<usize> = if range {
                (0..columns.len()).rev().collect()
            } else {
                (0..columns.len()).collect()
            };
            for col in cols {
                let mut keyed: Vec<(f64, usize, Slot)> = columns[col]
                    .iter()
                    .enumerate()
                    .map(|(row, &slot)| {
                        let rows = neighbours(slot, toward, columns, col);
                        let key = if rows.is_empty() {
                            row as f64
                        } else {
                            rows.iter().sum::<f64>() / rows.len() as f64
                        };
                        (key, row, slot)
                    })
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                columns[col] = keyed.into_iter().map(|(_, _, s)| s).collect();
            }
        }
    }
}

/// Coordinates for every slot, then the edges' paths.
fn place(columns: &[Vec<Slot>], edges: &[(usize, usize, Option<String>)], n: usize) -> Layout {
    let slot_h = |s: &Slot| match s {
        Slot::Step(_) => NODE_H,
        Slot::Waypoint(_) => WAYPOINT_H,
    };
    let heights: Vec<f64> = columns
        .iter()
        .map(|c| c.iter().map(slot_h).sum::<f64>() + GAP_Y * c.len().saturating_sub(1) as f64)
        .collect();
    let tallest = heights.iter().copied().fold(0.0, f64::max);
    let mut nodes: Vec<Option<NodeBox>> = vec![None; n];
    // Waypoint centre y per (edge, column).
    let mut waypoints: Vec<Vec<(usize, f64)>> = vec![Vec::new(); edges.len()];
    for (col, slots) in columns.iter().enumerate() {
        let x = PAD + col as f64 * (NODE_W + GAP_X);
        // Columns are centred vertically.
        let mut y = PAD + (tallest - heights[col]) / 2.0;
        for slot in slots {
            let h = slot_h(slot);
            match *slot {
                Slot::Step(i) => {
                    nodes[i] = Some(NodeBox {
                        index: i,
                        level: col,
                        x,
                        y,
                        w: NODE_W,
                        h,
                    });
                }
                Slot::Waypoint(e) => waypoints[e].push((col, y + h / 2.0)),
            }
            y += h + GAP_Y;
        }
    }
    let nodes: Vec<NodeBox> = nodes.into_iter().flatten().collect();
    let column_x = |col: usize| PAD + col as f64 * (NODE_W + GAP_X);
    let paths = edges
        .iter()
        .enumerate()
        .map(|(e, (from, to, handle))| {
            let a = &nodes[*from];
            let b = &nodes[*to];
            let mut points = vec![(a.right(), a.mid_y())];
            for &(col, y) in &waypoints[e] {
                points.push((column_x(col), y));
                points.push((column_x(col) + NODE_W, y));
            }
            points.push((b.x, b.mid_y()));
            let label = (
                (points[0].0 + points[1].0) / 2.0,
                (points[0].1 + points[1].1) / 2.0 - 4.0,
            );
            EdgePath {
                from: *from,
                to: *to,
                handle: handle.clone(),
                d: path_data(&points),
                points,
                label,
            }
        })
        .collect();
    let width =
        PAD * 2.0 + columns.len() as f64 * NODE_W + columns.len().saturating_sub(1) as f64 * GAP_X;
    Layout {
        width: width.max(NODE_W + PAD * 2.0),
        height: tallest + PAD * 2.0,
        nodes,
        edges: paths,
    }
}

/// Points alternate gap-crossings (curves) and column-crossings (lines):
/// points 0→1 cross a gap, 1→2 a column, 2→3 a gap, ...
fn path_data(points: &[(f64, f64)]) -> String {
    let mut d = format!("M{:.1},{:.1}", points[0].0, points[0].1);
    for (k, pair) in points.windows(2).enumerate() {
        let (x0, y0) = pair[0];
        let (x1, y1) = pair[1];
        if k % 2 == 0 {
            let mid = (x0 + x1) / 2.0;
            d.push_str(&format!(
                " C{mid:.1},{y0:.1} {mid:.1},{y1:.1} {x1:.1},{y1:.1}"
            ));
        } else {
            d.push_str(&format!(" L{x1:.1},{y1:.1}"));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Workflow;

    fn dag_of(path: &str) -> (Workflow, Dag) {
        let text = std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")))
            .expect("example workflow");
        let workflow = Workflow::from_json(&text).expect("example parses");
        let dag = Dag::build(&workflow.steps).expect("example is a DAG");
        (workflow, dag)
    }

    fn synthetic(steps: &[(&str, &[&str])]) -> Dag {
        let json = serde_json::json!({
            "name": "g",
            "steps": steps.iter().map(|(id, needs)| serde_json::json!({
                "id": id, "piece": "transform@^0.1", "action": "template",
                "input": {"template": "x"}, "needs": needs,
            })).collect::<Vec<_>>(),
        });
        let workflow = Workflow::from_json(&json.to_string()).expect("synthetic workflow");
        Dag::build(&workflow.steps).expect("synthetic dag")
    }

    /// Whether the piece p→q as drawn (a curve across a gap, `curve`, or a
    /// line through a column) passes through the inside of `b`.
    fn crosses(p: (f64, f64), q: (f64, f64), curve: bool, b: &NodeBox) -> bool {
        let mid = (p.0 + q.0) / 2.0;
        // Sample densely: pieces are short and boxes large.
        (0..=400).any(|k| {
            let t = k as f64 / 400.0;
            let (x, y) = if curve {
                let u = 1.0 - t;
                let x = u * u * u * p.0
                    + 3.0 * u * u * t * mid
                    + 3.0 * u * t * t * mid
                    + t * t * t * q.0;
                let y = u * u * u * p.1
                    + 3.0 * u * u * t * p.1
                    + 3.0 * u * t * t * q.1
                    + t * t * t * q.1;
                (x, y)
            } else {
                (p.0 + (q.0 - p.0) * t, p.1 + (q.1 - p.1) * t)
            };
            x > b.x + 0.5 && x < b.x + b.w - 0.5 && y > b.y + 0.5 && y < b.y + b.h - 0.5
        })
    }

    /// Every invariant the drawing promises.
    fn check(layout: &Layout, dag: &Dag) {
        assert_eq!(layout.nodes.len(), dag.order.len());
        for (i, a) in layout.nodes.iter().enumerate() {
            assert_eq!(a.index, i);
            assert!(a.x >= 0.0 && a.y >= 0.0);
            assert!(a.x + a.w <= layout.width + 0.01 && a.y + a.h <= layout.height + 0.01);
            for b in &layout.nodes[i + 1..] {
                let apart =
                    a.x + a.w <= b.x || b.x + b.w <= a.x || a.y + a.h <= b.y || b.y + b.h <= a.y;
                assert!(apart, "boxes of steps {} and {} overlap", a.index, b.index);
            }
        }
        let edges: usize = dag.deps.iter().map(Vec::len).sum();
        assert_eq!(layout.edges.len(), edges);
        let mut bands: Vec<(f64, f64, f64)> = Vec::new();
        for edge in &layout.edges {
            let from = &layout.nodes[edge.from];
            let to = &layout.nodes[edge.to];
            assert!(
                from.level < to.level,
                "edge {}->{} does not go right",
                edge.from,
                edge.to
            );
            assert_eq!(edge.points.len(), 2 + 2 * (to.level - from.level - 1));
            for (k, pair) in edge.points.windows(2).enumerate() {
                for node in &layout.nodes {
                    assert!(
                        !crosses(pair[0], pair[1], k % 2 == 0, node),
                        "edge {}->{} passes through step {}",
                        edge.from,
                        edge.to,
                        node.index
                    );
                }
            }
            // Inside a column the edge owns its band: no other edge runs there.
            for pair in edge.points[1..edge.points.len() - 1].chunks(2) {
                let (x, y) = pair[0];
                assert_eq!(pair[1].1, y, "a waypoint is horizontal");
                for &(bx, by, _) in &bands {
                    assert!(
                        !(bx == x && (by - y).abs() < WAYPOINT_H),
                        "two edges share a band at x={x}"
                    );
                }
                bands.push((x, y, pair[1].0));
            }
        }
    }

    #[test]
    fn hello_is_laid_out_by_dependency_level() {
        let (workflow, dag) = dag_of("examples/hello.json");
        let layout = layout(&dag);
        check(&layout, &dag);
        let level = |id: &str| {
            let i = workflow.steps.iter().position(|s| s.id == id).unwrap();
            layout.nodes[i].level
        };
        assert_eq!(level("greet"), 0);
        assert_eq!(level("measure"), 0);
        assert_eq!(level("shout"), 0);
        assert_eq!(level("check"), 1);
        assert_eq!(level("long_name"), 2);
        assert_eq!(level("short_name"), 2);
        assert_eq!(level("verdict"), 3);
        assert_eq!(level("summary"), 4);
        let handles: Vec<_> = layout
            .edges
            .iter()
            .filter_map(|e| e.handle.clone())
            .collect();
        assert_eq!(handles, ["then", "else"]);
        // greet and shout feed summary across three columns: waypoints.
        let greet = workflow.steps.iter().position(|s| s.id == "greet").unwrap();
        let long = layout.edges.iter().find(|e| e.from == greet).unwrap();
        assert_eq!(long.points.len(), 2 + 2 * 3);
    }

    #[test]
    fn every_example_workflow_routes_without_overlaps() {
        for path in [
            "examples/hello.json",
            "examples/summarize.json",
            "examples/reminder.json",
        ] {
            let (_, dag) = dag_of(path);
            check(&layout(&dag), &dag);
        }
    }

    #[test]
    fn long_edges_and_wide_columns_route_without_overlaps() {
        // A diamond, a chain with a skip over it, and a fan-in from every level.
        let dag = synthetic(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["a"]),
            ("d", &["b", "c"]),
            ("e", &["d"]),
            ("f", &["e", "a"]),
            ("g", &[]),
            ("h", &["g", "b", "d", "e", "f"]),
            ("i", &[]),
            ("j", &["i", "c"]),
        ]);
        let layout = layout(&dag);
        check(&layout, &dag);
        assert_eq!(layout.nodes[7].level, 5);
    }

    #[test]
    fn a_single_step_and_a_chain_of_forty() {
        let one = synthetic(&[("only", &[])]);
        let l = layout(&one);
        check(&l, &one);
        assert!(l.edges.is_empty());
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let needs: Vec<Vec<&str>> = (0..40)
            .map(|i| {
                if i == 0 {
                    vec![]
                } else {
                    vec![names[i - 1].as_str()]
                }
            })
            .collect();
        let steps: Vec<(&str, &[&str])> = names
            .iter()
            .zip(&needs)
            .map(|(n, d)| (n.as_str(), d.as_slice()))
            .collect();
        let chain = synthetic(&steps);
        let l = layout(&chain);
        check(&l, &chain);
        assert_eq!(l.nodes[39].level, 39);
    }
}
