"""A user's pruning criterion: one module, one registration."""

from edgecompress.prune import Criterion, L1Importance, register_criterion


class LargestL1First(Criterion):
    """Prunes the filters with the largest L1 norm first: the opposite of ``l1``, to show the ranking is the criterion's."""

    name = "largest-l1-first"

    def score(self, group, modules):
        return -L1Importance().score(group, modules)


register_criterion(LargestL1First())
