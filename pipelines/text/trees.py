"""Labelled constituency trees in Penn Treebank bracket form, one tree per line, as the Stanford
Sentiment Treebank writes them: ``(3 (2 It) (4 (2 's) (4 good)))``. Every node has a label; a leaf
node holds one token."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


class TreeError(ValueError):
    """A line that is not one well-formed labelled tree."""


def tree_phrases(line: str, every_node: bool = True) -> list[tuple[str, str]]:
    """``(label, phrase)`` of the root first, then (``every_node``) of every other node in
    pre-order; a phrase is its leaves joined by single spaces. TreeError when the line is not one
    well-formed tree."""
    tokens = _TOKEN.findall(line)
    phrases: list[tuple[str, list[str]]] = []  # (label, leaves) in pre-order
    stack: list[int] = []  # open nodes, as indices into phrases
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if token == "(":
            if position + 1 >= len(tokens) or tokens[position + 1] in "()":
                raise TreeError("a node without a label")
            if not stack and phrases:
                raise TreeError("more than one tree on the line")
            stack.append(len(phrases))
            phrases.append((tokens[position + 1], []))
            position += 2
        elif token == ")":
            if not stack:
                raise TreeError("unbalanced ')'")
            closed = stack.pop()
            if not phrases[closed][1]:
                raise TreeError("a node without words")
            if stack:  # a parent's leaves include its children's
                phrases[stack[-1]][1].extend(phrases[closed][1])
            position += 1
        else:
            if not stack:
                raise TreeError("a word outside the tree")
            phrases[stack[-1]][1].append(token)
            position += 1
    if stack or not phrases:
        raise TreeError("unbalanced '('" if stack else "no tree")
    chosen = phrases if every_node else phrases[:1]
    return [(label, " ".join(leaves)) for label, leaves in chosen]
