"""Quasi-static planar pushing: a disc end-effector pushes disc blocks, which push each other and stop when released.

No velocities are kept: every substep moves the end-effector, then resolves overlaps by moving blocks out of the
way. The pusher-block contact has Coulomb friction: a block touched by an end-effector moving within the friction
cone (FRICTION_CONE_DEG of the contact normal) sticks to it and moves with it; outside the cone it slides and is only
pushed out along the normal. Sticking makes pushing stable (a small sideways error no longer makes the block slip
off), which is what keeps the task learnable from a few hundred demonstrations. Deterministic and smooth.
"""

from __future__ import annotations

import numpy as np

from tau_sim.tabletop_tasks import BLOCK_RADIUS, EE_RADIUS, MAX_STEP, TABLE_SIZE

SUBSTEPS = 3
RESOLVE_ITERS = 4
FRICTION_CONE_DEG = 45.0
_COS_CONE = float(np.cos(np.deg2rad(FRICTION_CONE_DEG)))
_TOUCH = 1e-3  # a block within this distance of contact counts as touching the end-effector


def _push_out(mover: np.ndarray, anchor: np.ndarray, min_dist: float) -> None:
    """Move `mover` (in place) along the anchor->mover direction until it is at least `min_dist` from `anchor`."""
    delta = mover - anchor
    dist = float(np.hypot(delta[0], delta[1]))
    if dist >= min_dist:
        return
    direction = delta / dist if dist > 1e-9 else np.array([1.0, 0.0])
    mover += direction * (min_dist - dist)


def _clamp(p: np.ndarray, radius: float) -> None:
    np.clip(p, radius, TABLE_SIZE - radius, out=p)


def _carry_stuck_blocks(ee: np.ndarray, blocks: np.ndarray, velocity: np.ndarray, contact: float) -> None:
    """Move (in place) every block the end-effector touches while moving inside the friction cone."""
    speed = float(np.hypot(velocity[0], velocity[1]))
    if speed < 1e-12:
        return
    for block in blocks:
        normal = block - ee
        dist = float(np.hypot(normal[0], normal[1]))
        if dist < contact + _TOUCH and float(normal @ velocity) > _COS_CONE * dist * speed:
            block += velocity


def step_physics(ee: np.ndarray, blocks: np.ndarray, action: np.ndarray) -> None:
    """Advance the scene one control step in place; `action` is a 2-D velocity in [-1, 1] per axis."""
    velocity = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0) * MAX_STEP / SUBSTEPS
    contact = EE_RADIUS + BLOCK_RADIUS
    for _ in range(SUBSTEPS):
        _carry_stuck_blocks(ee, blocks, velocity, contact)
        ee += velocity
        _clamp(ee, EE_RADIUS)
        for _ in range(RESOLVE_ITERS):
            for block in blocks:
                _push_out(block, ee, contact)
            for i in range(len(blocks)):
                for j in range(i + 1, len(blocks)):
                    delta = blocks[j] - blocks[i]
                    dist = float(np.hypot(delta[0], delta[1]))
                    if dist < 2 * BLOCK_RADIUS:
                        direction = delta / dist if dist > 1e-9 else np.array([1.0, 0.0])
                        shift = direction * (2 * BLOCK_RADIUS - dist) / 2
                        blocks[i] -= shift
                        blocks[j] += shift
            for block in blocks:
                _clamp(block, BLOCK_RADIUS)
        for block in blocks:  # a block held by the table edge stops the end-effector instead
            _push_out(ee, block, contact)
        _clamp(ee, EE_RADIUS)
