"""Where the boxes of a graph go: layers left to right, each box on the row of
what feeds it. About 80 lines: layers by longest path, crossings reduced by
barycentres, edges across several columns bent through each. The graphs a
lesson steps through have tens of ops, where a layout library (grandalf,
igraph's Sugiyama, networkx) would do no better and would still need our box
sizes, columns and edge routing around it."""
import itertools


def layout(sizes, inputs, hgap=20, vgap=12, margin=6):
    """Boxes of ``sizes`` (width, height), ``inputs[k]`` feeding box k (every
    input before its outputs), laid out in columns left to right. Returns the
    boxes' centres, each edge's points, and the drawing's width and height."""
    n = len(sizes)
    outputs = [[] for _ in range(n)]
    for k, ins in enumerate(inputs):
        for i in ins:
            outputs[i].append(k)
    layer = [0] * n
    for k in range(n):                            # longest path from the leaves
        layer[k] = 1 + max((layer[i] for i in inputs[k]), default=-1)
    for k in reversed(range(n)):                  # a leaf sits just before its first use
        if not inputs[k] and outputs[k]:
            layer[k] = min(layer[o] for o in outputs[k]) - 1
    # an edge across several columns passes through a point in each (a "dummy" box of height 0)
    columns = [[] for _ in range(max(layer) + 1)]
    col_of, height, chains, links = list(layer), [h for _, h in sizes], [], set()
    for k in range(n):
        columns[layer[k]].append(k)
    for k in range(n):
        for i in dict.fromkeys(inputs[k]):
            chain = [i]
            for c in range(layer[i] + 1, layer[k]):
                col_of.append(c)
                height.append(0)
                columns[c].append(len(col_of) - 1)
                chain.append(len(col_of) - 1)
            chains.append(chain + [k])
            links.update(zip(chain, chain[1:] + [k]))
    left = [[] for _ in col_of]
    right = [[] for _ in col_of]
    for a, b in links:
        right[a].append(b)
        left[b].append(a)
    place = {v: i for c in columns for i, v in enumerate(c)}
    for sweep in range(8):                        # barycentres: fewer crossings
        forward = sweep % 2 == 0
        for c in (range(1, len(columns)) if forward else range(len(columns) - 2, -1, -1)):
            near = left if forward else right
            key = lambda v: (sum(place[u] for u in near[v]) / len(near[v]) if near[v] else place[v])
            columns[c].sort(key=key)
            place.update({v: i for i, v in enumerate(columns[c])})
    # rows: each box on the row of (the median of) what feeds it, below the box above it;
    # a leaf then moves to the row of what it feeds where the column leaves room
    row = {}
    for c in columns:
        for j, v in enumerate(c):
            fed = sorted(row[u] for u in left[v])
            row[v] = max(fed[(len(fed) - 1) // 2] if fed else 0, row[c[j - 1]] + 1 if j else 0)
    for c in reversed(columns):
        for j, v in enumerate(c):
            if not left[v] and right[v]:
                feeds = sorted(row[u] for u in right[v])
                low = row[c[j - 1]] + 1 if j else 0
                high = row[c[j + 1]] - 1 if j + 1 < len(c) else float("inf")
                row[v] = min(max(feeds[(len(feeds) - 1) // 2], low), high) if low <= high else row[v]
    tall = [0.0] * (max(row.values()) + 1)           # a row of bends alone is thin
    for v, r in row.items():
        tall[r] = max(tall[r], height[v])
    centre = [t / 2 + sum(tall[:r]) + vgap * r for r, t in enumerate(tall)]
    y = [centre[row[v]] + margin for v in range(len(col_of))]
    widths = [max((sizes[v][0] for v in c if v < n), default=0) for c in columns]
    x_left = list(itertools.accumulate([margin] + [w + hgap for w in widths]))
    x = [x_left[col_of[v]] + widths[col_of[v]] / 2 for v in range(len(col_of))]
    paths = {}
    for chain in chains:
        i, k = chain[0], chain[-1]
        points = [(x[i] + sizes[i][0] / 2, y[i])]
        for v in chain[1:-1]:                     # straight through a column it only crosses
            points += [(x_left[col_of[v]], y[v]), (x_left[col_of[v]] + widths[col_of[v]], y[v])]
        points.append((x[k] - sizes[k][0] / 2, y[k]))
        paths[(i, k)] = points
    width = x_left[-1] - hgap + margin
    bottom = max(y[v] + height[v] / 2 for v in range(len(col_of))) + margin
    return [(x[k], y[k]) for k in range(n)], paths, width, bottom
