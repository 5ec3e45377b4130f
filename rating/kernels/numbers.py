"""Number normalisation to E.164 digits and longest-prefix zone matching over digit tries."""

from __future__ import annotations

from numba import njit

from cdr_schemas.reasons import Reason

INVALID_NUMBER = int(Reason.INVALID_NUMBER)
MAX_E164_DIGITS = 15
_PLUS = 43
_ZERO = 48


@njit(nogil=True, cache=True)
def _starts_with(data, start, end, prefix, prefix_len):
    if prefix_len == 0 or end - start < prefix_len:
        return False
    for k in range(prefix_len):
        if data[start + k] != prefix[k] + _ZERO:
            return False
    return True


@njit(nogil=True, cache=True)
def normalise_numbers(offsets, data, plan, num_cc, num_cc_len, num_intl, num_intl_len,
                      num_trunk, num_trunk_len, out_digits, out_len, out_reason):
    """Normalise dialled numbers to E.164 digits (as 0..9 values) with each record's plan numbering.

    ``+`` or the international prefix: the rest is E.164. The trunk prefix: replaced by the country
    code. Anything else: a national number, prefixed with the country code. Records with
    ``plan[i] < 0`` are skipped (out_len 0). A character that is not a digit, or a result that is
    empty or longer than 15 digits, sets ``out_reason[i] = INVALID_NUMBER``.
    """
    for i in range(len(plan)):
        out_len[i] = 0
        p = plan[i]
        if p < 0:
            continue
        start = offsets[i]
        end = offsets[i + 1]
        k = 0
        if end > start and data[start] == _PLUS:
            start += 1
        elif _starts_with(data, start, end, num_intl[p], num_intl_len[p]):
            start += num_intl_len[p]
        else:
            if _starts_with(data, start, end, num_trunk[p], num_trunk_len[p]):
                start += num_trunk_len[p]
            for c in range(num_cc_len[p]):
                out_digits[i, k] = num_cc[p, c]
                k += 1
        ok = end > start and (end - start) + k <= MAX_E164_DIGITS
        if ok:
            for j in range(start, end):
                d = data[j] - _ZERO
                if d < 0 or d > 9:
                    ok = False
                    break
                out_digits[i, k] = d
                k += 1
        if ok:
            out_len[i] = k
        else:
            out_reason[i] = INVALID_NUMBER


@njit(nogil=True, cache=True)
def parse_digits(offsets, data, present, out_digits, out_len):
    """Copy digit strings (MCC+MNC) into digit rows; a non-digit or absent value gives length 0."""
    width = out_digits.shape[1]
    for i in range(len(present)):
        out_len[i] = 0
        if not present[i]:
            continue
        start = offsets[i]
        end = offsets[i + 1]
        if end - start > width:
            continue
        ok = end > start
        for j in range(start, end):
            d = data[j] - _ZERO
            if d < 0 or d > 9:
                ok = False
                break
            out_digits[i, j - start] = d
        if ok:
            out_len[i] = end - start


@njit(nogil=True, cache=True)
def match_zones(digits, lengths, root, trie_children, trie_zone, out_zone):
    """Longest-prefix match of each digit row from its table's trie root; -1 when nothing matches.

    Rows with ``root[i] < 0`` are skipped (out_zone left unchanged).
    """
    for i in range(len(root)):
        node = root[i]
        if node < 0:
            continue
        best = -1
        for k in range(lengths[i]):
            node = trie_children[node, digits[i, k]]
            if node < 0:
                break
            z = trie_zone[node]
            if z >= 0:
                best = z
        out_zone[i] = best
