import pytest

from pipelines.text.trees import TreeError, tree_phrases


def test_every_node_in_pre_order_with_its_words():
    tree = "(3 (2 It) (4 (2 's) (4 (3 very) (4 good))))"
    assert tree_phrases(tree) == [
        ("3", "It 's very good"),
        ("2", "It"),
        ("4", "'s very good"),
        ("2", "'s"),
        ("4", "very good"),
        ("3", "very"),
        ("4", "good"),
    ]
    assert tree_phrases(tree, every_node=False) == [("3", "It 's very good")]
    assert tree_phrases("(1 (2 -LRB-) (1 \\/))") == [("1", "-LRB- \\/"), ("2", "-LRB-"), ("1", "\\/")]


@pytest.mark.parametrize("line", ["", "(3 (2 It)", "(3 (2 It)))", "(3 (2 It)) (2 x)", "( (2 It))", "(3 )", "x (3 y)"])
def test_a_line_that_is_not_one_tree_is_refused(line):
    with pytest.raises(TreeError):
        tree_phrases(line)
