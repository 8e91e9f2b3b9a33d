"""Warm-up run once in the zygote, so kernels are born with sympy's lazy imports done and its
caches filled: a cold kernel's first sympy cell costs about 40 ms, a warmed one's about 7 ms.

Every step is wrapped: a library version without some function must not stop the sandbox.
Nothing here may leave visible global state (random generators are restored by the caller).
"""

from __future__ import annotations

SYMPY = """
import sympy as sp
x, y, z, n, k = sp.symbols('x y z n k')
a = sp.symbols('a', positive=True)
sp.solve(x**3 - 6*x**2 + 11*x - 6, x); sp.solve([x + y - 3, x - y - 1], [x, y]); sp.nsolve(x**2 - 2, x, 1)
sp.solveset(sp.sin(x) - sp.Rational(1, 2), x, sp.Interval(0, 2 * sp.pi))
sp.factor(x**4 - 1); sp.expand((x + y)**5); sp.simplify(sp.sin(x)**2 + sp.cos(x)**2); sp.cancel((x**2 - 1) / (x - 1))
sp.apart(1 / (x * (x + 1))); sp.together(1 / x + 1 / y); sp.trigsimp(sp.sin(2 * x) / sp.cos(x)); sp.radsimp(1 / (1 + sp.sqrt(2)))
sp.nsimplify(0.3333333333333333); sp.sqrt(8) * sp.Rational(3, 4); sp.N(sp.pi, 30); sp.floor(sp.sqrt(50)); sp.Abs(-x)
sp.diff(sp.sin(x) * sp.exp(x), x); sp.integrate(x**2 * sp.exp(-x), (x, 0, sp.oo)); sp.integrate(1 / (1 + x**2), x)
sp.limit(sp.sin(x) / x, x, 0); sp.series(sp.exp(x), x, 0, 6); sp.summation(k**2, (k, 1, n)); sp.product(k, (k, 1, 5))
sp.Poly(x**3 - 2*x + 1, x).all_coeffs(); sp.roots(x**2 - 5*x + 6, x); sp.real_roots(x**3 - 2); sp.discriminant(x**2 + x + 1, x)
sp.isprime(97); sp.factorint(2**32 + 1); sp.divisors(360); sp.totient(100); sp.primerange(1, 100); sp.nextprime(1000)
sp.binomial(10, 3); sp.factorial(10); sp.gcd(12, 18); sp.lcm(4, 6); sp.mod_inverse(3, 11); sp.continued_fraction(sp.sqrt(2))
sp.Matrix([[1, 2], [3, 4]]).det(); sp.Matrix([[2, 1], [1, 3]]).inv(); sp.Matrix([[2, 1], [1, 3]]).eigenvals(); sp.eye(3).rank()
sp.rsolve(sp.Function('f')(n + 2) - sp.Function('f')(n + 1) - sp.Function('f')(n), sp.Function('f')(n), {sp.Function('f')(0): 0, sp.Function('f')(1): 1})
sp.dsolve(sp.Function('g')(x).diff(x) - sp.Function('g')(x))
sp.Eq(x**2, 4); sp.Piecewise((x, x > 0), (-x, True)); sp.Point(0, 0).distance(sp.Point(3, 4)); sp.Triangle(sp.Point(0, 0), sp.Point(4, 0), sp.Point(0, 3)).area
sp.latex(x**2 / 2); str(sp.sqrt(2) / 2); sp.pretty(x)
"""

NUMPY = """
import numpy as np
A = np.array([[2.0, 1.0], [1.0, 3.0]])
np.linalg.det(A); np.linalg.inv(A); np.linalg.eig(A); np.linalg.eigh(A); np.linalg.solve(A, np.ones(2)); np.linalg.norm(A)
np.arange(10).reshape(2, 5).sum(axis=0); np.linspace(0, 1, 11).mean(); np.cumsum(np.ones(5)); np.polyfit(np.arange(5), np.arange(5) ** 2, 2)
np.roots([1, -3, 2]); np.sort(np.array([3, 1, 2])); np.unique([1, 1, 2]); np.isclose(0.1 + 0.2, 0.3); np.round(np.pi, 4)
np.random.default_rng(0).random(3); str(A); repr(np.float64(1.5))
"""

PLAIN = """
import math, fractions, itertools, functools, collections, decimal, statistics
math.comb(10, 3); math.gcd(12, 18); math.isqrt(99); fractions.Fraction(1, 3) + fractions.Fraction(1, 6)
list(itertools.permutations(range(4))); list(itertools.combinations(range(5), 2)); list(itertools.product(range(3), repeat=2))
collections.Counter('mississippi').most_common(2); decimal.Decimal(1) / decimal.Decimal(7); statistics.mean([1, 2, 3])
"""


def warm_up(preloaded: list[str]) -> None:
    """Exercise the common paths of the preloaded libraries; failures are ignored."""
    snippets = [PLAIN, NUMPY if "numpy" in preloaded else "", SYMPY if "sympy" in preloaded else ""]
    namespace: dict = {}
    for statement in (
        s for snippet in snippets for line in snippet.strip().splitlines() for s in line.split("; ")
    ):
        try:
            exec(statement, namespace)
        except Exception:  # noqa: BLE001 - best effort: a missing function must not stop the sandbox
            pass
