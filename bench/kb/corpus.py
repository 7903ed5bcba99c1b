#!/usr/bin/env python3
"""Synthetic knowledge-base corpus and query list for `just bench-kb`.

    python3 corpus.py --entries 100000 --seed 12345 --out DIR

writes DIR/corpus.jsonl (one entry per line, the fields `civichub kb import`
reads) and DIR/queries.jsonl ({"q": ..., "source": "eval" | "title"}).

Every generated entry recombines pieces of the hand-written corpus in
knowledge-base/data/entries-*.jsonl (its public, published entries):

- a base entry gives the category, the department and the shape;
- the title is the base title with, half the time, one of its clauses
  swapped for a clause of another title of the same category, and now and
  then a county name in front (温岭市…);
- the body keeps the base body's first line (the question or the
  conditions) and its last line (the hotline), and fills the middle with the
  base's own lines mixed with lines of other entries of the same category,
  until it is about as long as the base (the real bodies are 212-442
  characters); a third of the bodies also name the county they apply to;
- the tags are the base's, plus one or two of a sibling's.

Queries: every query of knowledge-base/eval/queries-*.jsonl (what citizens
type), then title fragments of generated entries (a clause, or 4-8
characters cut from one) until there are --queries in all, without
duplicates. Same seed, same files.
"""

import argparse
import glob
import json
import os
import random
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))

# The counties (市/区/县) of the corpus's Taizhou-style city.
COUNTIES = ["椒江区", "黄岩区", "路桥区", "临海市", "温岭市", "玉环市", "天台县", "仙居县", "三门县"]

CLAUSE_END = "，？。！、；：,?!;:"


def clauses(title):
    """Splits a title into clauses, each keeping its closing punctuation."""
    parts = re.findall(r"[^%s]+[%s]?" % (re.escape(CLAUSE_END), re.escape(CLAUSE_END)), title)
    return [p for p in parts if p.strip()]


def bare(clause):
    return clause.rstrip(CLAUSE_END).strip()


def load_material():
    entries = []
    for path in sorted(glob.glob(os.path.join(ROOT, "knowledge-base", "data", "entries-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    e = json.loads(line)
                    if e.get("audience") == "public" and e.get("status") == "published":
                        entries.append(e)
    if not entries:
        sys.exit("corpus.py: no public, published entries in knowledge-base/data/")
    by_category = {}
    for e in entries:
        by_category.setdefault(e.get("category_name") or "", []).append(e)
    return entries, by_category


def make_title(rng, base, siblings):
    parts = clauses(base["title"])
    if len(siblings) > 1 and rng.random() < 0.5:
        other = rng.choice([s for s in siblings if s is not base])
        donor = clauses(other["title"])
        i = rng.randrange(len(parts))
        piece = bare(rng.choice(donor))
        ending = parts[i][len(bare(parts[i])):] if parts[i] != bare(parts[i]) else ""
        parts[i] = piece + ending
    title = "".join(parts)
    if rng.random() < 0.2:
        title = rng.choice(COUNTIES) + title
    return title[:200]


def make_body(rng, base, siblings, county):
    lines = [l for l in base["body"].split("\n") if l.strip()]
    head, middle, tail = lines[0], lines[1:-1], lines[-1:]
    if not middle:
        middle, tail = tail, []
    pool = list(middle)
    for s in rng.sample(siblings, min(len(siblings), 3)):
        if s is not base:
            s_lines = [l for l in s["body"].split("\n") if l.strip()]
            pool.extend(s_lines[1:-1])
    target = max(200, min(460, int(len(base["body"]) * rng.uniform(0.85, 1.15))))
    body = [head]
    length = len(head) + sum(len(t) for t in tail)
    # The base's own lines first (most of them), then borrowed ones.
    own = [l for l in middle if rng.random() < 0.8]
    borrowed = [l for l in pool if l not in middle]
    rng.shuffle(borrowed)
    for line in own + borrowed:
        if length + len(line) > target and len(body) > 1:
            break
        body.append(line)
        length += len(line) + 1
    if county:
        body.append("本条答复适用于%s，具体以%s相关部门或窗口告知为准。" % (county, county))
    body.extend(tail)
    return "\n".join(body)


def make_tags(rng, base, siblings):
    tags = list(base.get("tags") or [])
    other = rng.choice(siblings)
    extra = [t for t in (other.get("tags") or []) if t not in tags]
    tags.extend(rng.sample(extra, min(len(extra), rng.randint(0, 2))))
    return tags[:6]


def generate(n, seed):
    rng = random.Random(seed)
    material, by_category = load_material()
    for k in range(1, n + 1):
        base = rng.choice(material)
        siblings = by_category[base.get("category_name") or ""]
        county = rng.choice(COUNTIES) if rng.random() < 0.33 else None
        yield {
            "id": "kb-syn-%06d" % k,
            "title": make_title(rng, base, siblings),
            "body": make_body(rng, base, siblings, county),
            "category_name": base.get("category_name"),
            "department": base.get("department"),
            "tags": make_tags(rng, base, siblings),
            "audience": "public",
            "status": "published",
        }


def eval_queries():
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, "knowledge-base", "eval", "queries-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["query"])
    return out


def title_fragment(rng, title):
    parts = [bare(c) for c in clauses(title) if len(bare(c)) >= 2]
    if not parts:
        return None
    clause = rng.choice(parts)
    if len(clause) > 8 and rng.random() < 0.5:
        width = rng.randint(4, 8)
        start = rng.randrange(len(clause) - width + 1)
        clause = clause[start:start + width]
    return clause.strip() or None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=400)
    p.add_argument("--seed", type=int, default=12345)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    titles = []
    with open(os.path.join(a.out, "corpus.jsonl"), "w", encoding="utf-8") as f:
        for e in generate(a.entries, a.seed):
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
            titles.append(e["title"])
    rng = random.Random(a.seed + 1)
    seen, queries = set(), []
    for q in eval_queries():
        if q not in seen and len(queries) < a.queries:
            seen.add(q)
            queries.append({"q": q, "source": "eval"})
    for _ in range(a.queries * 20):
        if len(queries) >= a.queries:
            break
        q = title_fragment(rng, rng.choice(titles))
        if q and q not in seen:
            seen.add(q)
            queries.append({"q": q, "source": "title"})
    with open(os.path.join(a.out, "queries.jsonl"), "w", encoding="utf-8") as f:
        for q in queries:
            f.write(json.dumps(q, ensure_ascii=False) + "\n")
    print("corpus: %d entries, %d queries (%d from knowledge-base/eval, %d title fragments), seed %d"
          % (a.entries, len(queries), sum(q["source"] == "eval" for q in queries),
             sum(q["source"] == "title" for q in queries), a.seed))


if __name__ == "__main__":
    main()
