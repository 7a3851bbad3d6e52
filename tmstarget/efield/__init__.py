"""E-field of the TMS coil at the target, in seconds: dipole coils, local-sphere head, pose search.

numpy/scipy only.  SI units inside (m, m², A/s, V/m); the API speaks the project's units where it
meets the plan (world RAS mm, SimNIBS poses: columns x, y, z, centre; z into the head, handle = −y)
and says so in every name (``_ras_mm``, ``_a_per_s``, ``_v_per_m``).

API
---
:mod:`tmstarget.efield.coils`
    ``Coil(name, positions_m, moments_m2, didt_a_per_s, didt_source, source)`` — dipoles in the
    SimNIBS coil frame (m; moments per ampere, m²).
    ``builtin_coil(name="Magstim_D70")`` — "Magstim_D70", "MagVenture_MC-B70", "MagVenture_Cool-B65"
    (aliases D70, MC-B70, Cool-B65; ``BUILTIN_COILS`` holds every number and its source, and says
    which are estimates; default dI/dt at 100 % output 114.73, 155.33 and 149.77 A/µs, Drakaki et
    al. 2022).
    ``read_ccd(path, didt_a_per_s=None)`` / ``write_ccd(path, coil)`` — SimNIBS ``.ccd`` files.
    ``load_coil(name_or_ccd_path, didt_a_per_s=None)`` — what ``--coil`` / ``--didt`` need.
    ``A_PER_US = 1e6`` (A/µs → A/s).
:mod:`tmstarget.efield.sphere`
    ``fit_local_sphere(scalp_points_mm, centre_mm, radius_mm=40) -> Sphere(centre_ras_mm,
    radius_mm, rms_residual_mm, n_points)`` (``Sphere.as_dict()`` for efield.json ``sphere``).
    ``dipole_efield(points_m, dipole_positions_m, moments_m2, sphere_centre_m, didt_a_per_s)`` —
    the Heller & van Hulsteyn (1992) formula, V/m.
    ``efield_at_points(coil, pose_ras, points_ras_mm, sphere, didt_a_per_s=None)`` — (p, 3) V/m in
    world axes for one pose (NaN outside the sphere): the E-field map and the dose at a hotspot.
:mod:`tmstarget.efield.search`
    ``search_poses(coil, target_ras_mm, mesh, planned_pose_ras, scalp_point_ras_mm, *,
    didt_a_per_s=None, direction_ras=None, radius_mm=10, rings=2, gap_mm=4, angle_step_deg=5,
    reference_ras=(0, -1, 0), sphere_patch_mm=40, tie_tolerance=1e-3) -> SearchResult`` — 25 centres × 72 handle
    angles by default; ``SearchResult.as_dict()`` gives efield.json's ``coil``, ``didt_a_per_us``,
    ``sphere``, ``planned``, ``angle_curve``, ``best``, ``timing_s`` (the objective, |E| or
    E·direction, in ``e_target_v_per_m``); ``best_pose_ras``, ``best_angle_deg``,
    ``best_e_ras_v_per_m`` as attributes.
    ``coil_poses_on_scalp(mesh, scalp_point_ras_mm, ...) -> CandidatePoses``;
    ``handle_angle_deg(pose_ras, reference_ras)``; ``poses_at_angles(centre, outward_normal, angles)``.
    Handle angle: from posterior (projected onto the coil plane), counter-clockwise seen from
    outside the head.

Everything scales linearly with dI/dt: E at x % output = E(100 %) × x / 100.
"""
