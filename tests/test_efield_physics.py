"""Physics the built-in E-field model must obey (issue 18), and the SimNIBS ``.ccd`` reader.

References are independent of :func:`tmstarget.efield.sphere.dipole_efield`: the one-dipole field
is recomputed from reciprocity and the radial-B line integral of the magnetic scalar potential
(quadrature, no Heller-van Hulsteyn formula), and the radial-dipole case from the free-space
vector potential alone.
"""

import nibabel as nib
import numpy as np
import pytest
from scipy.integrate import quad

from tmstarget.anatomy.scalp import SurfaceMesh, mask_surface, ray_hits, scalp_surface
from tmstarget.coil.placement import place_coil, pose_from_handle
from tmstarget.efield.coils import BUILTIN_COILS, builtin_coil, read_ccd, write_ccd
from tmstarget.efield.search import handle_angle_deg, poses_at_angles, search_poses
from tmstarget.efield.sphere import Sphere, dipole_efield, efield_at_points, fit_local_sphere
from tmstarget.errors import InputError, OrientationError

RADIUS_MM = 85.0
GAP_MM = 4.0
DIDT = 100e6  # 100 A/us


@pytest.fixture(scope="module")
def d70():
    return builtin_coil("Magstim_D70")


@pytest.fixture(scope="module")
def head_sphere():
    return Sphere(np.zeros(3), RADIUS_MM)


def _vertex_pose(angle_deg=0.0):
    """Coil at the vertex of the head sphere (centred at 0), flat, GAP_MM above the scalp."""
    return poses_at_angles([0.0, 0.0, RADIUS_MM + GAP_MM], [0.0, 0.0, 1.0], [angle_deg])[0]


def _tilted_pose():
    """A coil over a lateral-frontal point, handle posterior-lateral (no symmetry to lean on)."""
    direction = np.array([0.55, 0.45, 0.70])
    direction /= np.linalg.norm(direction)
    return pose_from_handle((RADIUS_MM + GAP_MM) * direction, -direction, [0.3, -1.0, 0.1])


def _points_inside(n, seed=0):
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(n, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return directions * rng.uniform(5.0, RADIUS_MM - 1.0, size=(n, 1))


# --------------------------------------------------------------------------
# symmetry and shape of the field
# --------------------------------------------------------------------------


def test_no_radial_component_inside_the_sphere(d70, head_sphere):
    points = _points_inside(200)
    e = efield_at_points(d70, _tilted_pose(), points, head_sphere, DIDT)
    radial = np.einsum("ij,ij->i", e, points / np.linalg.norm(points, axis=1, keepdims=True))
    magnitude = np.linalg.norm(e, axis=1)
    assert magnitude.min() > 0
    assert np.max(np.abs(radial) / magnitude) < 1e-10


def test_rotating_the_coil_180_degrees_flips_e(d70, head_sphere):
    pose = _tilted_pose()
    turned = pose @ np.diag([-1.0, -1.0, 1.0, 1.0])  # 180 deg about the coil normal
    targets = pose[:3, 3] + np.array([[0, 0, 0], [8.0, -5.0, 3.0], [-12.0, 4.0, -6.0]]) + 25.0 * pose[:3, 2]
    e = efield_at_points(d70, pose, targets, head_sphere, DIDT)
    e_turned = efield_at_points(d70, turned, targets, head_sphere, DIDT)
    assert np.all(np.linalg.norm(e, axis=1) > 10)
    np.testing.assert_allclose(e_turned, -e, rtol=1e-10, atol=1e-9)


def test_field_at_sphere_centre_is_zero(d70, head_sphere):
    e_centre = efield_at_points(d70, _vertex_pose(), [[0.0, 0.0, 0.0]], head_sphere, DIDT)[0]
    e_cortex = efield_at_points(d70, _vertex_pose(), [[0.0, 0.0, RADIUS_MM - 20]], head_sphere, DIDT)[0]
    assert np.linalg.norm(e_cortex) > 50
    assert np.linalg.norm(e_centre) < 1e-12 * np.linalg.norm(e_cortex)


def test_field_falls_monotonically_with_depth_on_the_coil_axis(d70, head_sphere):
    depths = np.arange(0.5, 80.0, 2.0)
    points = np.column_stack([np.zeros_like(depths), np.zeros_like(depths), RADIUS_MM - depths])
    magnitude = np.linalg.norm(efield_at_points(d70, _vertex_pose(), points, head_sphere, DIDT), axis=1)
    assert np.all(np.diff(magnitude) < 0)
    assert magnitude[0] > 5 * magnitude[-1]


def test_field_scales_linearly_with_didt(d70, head_sphere):
    point = [[3.0, -2.0, RADIUS_MM - 18]]
    e1 = efield_at_points(d70, _vertex_pose(20), point, head_sphere, 100e6)
    e2 = efield_at_points(d70, _vertex_pose(20), point, head_sphere, 37e6)
    np.testing.assert_allclose(e2, e1 * 0.37, rtol=1e-12)


def test_points_outside_the_sphere_are_nan(d70, head_sphere):
    e = efield_at_points(d70, _vertex_pose(), [[0, 0, RADIUS_MM + 1], [0, 0, RADIUS_MM - 1]], head_sphere, DIDT)
    assert np.all(np.isnan(e[0])) and np.all(np.isfinite(e[1]))


def test_discretization_refinement_converges():
    """|E| error at a 20-mm-deep point against a 0.875-mm discretization (about 50,000 dipoles).

    Measured: 0.085 % at 7 mm elements, 0.011 % at 3.5 mm (the default), 0.002 % at 1.75 mm.
    """
    sphere_centre = np.array([0.0, 0.0, (GAP_MM + RADIUS_MM) * 1e-3])
    point = np.array([0.003, 0.002, (GAP_MM + 20.0) * 1e-3])

    def field(element_m):
        coil = builtin_coil("Magstim_D70", element_m=element_m)
        return dipole_efield(point, coil.positions_m, coil.moments_m2, sphere_centre, DIDT)

    reference = field(0.000875)
    errors = [np.linalg.norm(field(h) - reference) / np.linalg.norm(reference) for h in (0.007, 0.0035, 0.00175)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 1e-3
    assert builtin_coil("Magstim_D70").n_dipoles >= 1000 and builtin_coil("MagVenture_MC-B70").n_dipoles >= 1000


# --------------------------------------------------------------------------
# one dipole against independent references
# --------------------------------------------------------------------------


def _reciprocity_reference(r, r0, m, didt):
    """E(r) of a magnetic dipole m at r0 outside a sphere centred at 0, from first principles.

    Reciprocity: E(r)·q = −(dI/dt) m·B_q(r0), with B_q the field outside the sphere of a current
    dipole q at r.  Outside a spherical conductor B = −μ₀∇U and, because the volume currents add no
    radial field, U(r0) = (1/μ₀)∫_{|r0|}^∞ B₀(s û)·û ds with B₀ the free-space field of q; that
    gives U = (1/4π)(r × q)·û · I(r0), I(r0) = ∫_1^∞ |r0| |t r0 − r|⁻³ dt, differentiated under the
    integral and integrated by quadrature.
    """
    rho = np.linalg.norm(r0)

    def integral(func):
        return quad(func, 1.0, np.inf, epsabs=0.0, epsrel=1e-13, limit=200)[0]

    i_value = integral(lambda t: rho / np.linalg.norm(t * r0 - r) ** 3)
    grad_i = np.array(
        [
            integral(
                lambda t, k=k: (
                    r0[k] / rho / np.linalg.norm(t * r0 - r) ** 3
                    - 3 * rho * t * (t * r0[k] - r[k]) / np.linalg.norm(t * r0 - r) ** 5
                )
            )
            for k in range(3)
        ]
    )
    e = np.zeros(3)
    for k in range(3):
        w = np.cross(r, np.eye(3)[k])
        g = w @ r0 / rho
        grad_g = w / rho - (w @ r0) * r0 / rho**3
        # E·q = dI/dt μ₀ m·∇U = dI/dt · 1e-7 · m·(∇g I + g ∇I)
        e[k] = didt * 1e-7 * (m @ (grad_g * i_value + g * grad_i))
    return e


def test_one_dipole_matches_reciprocity_reference():
    rng = np.random.default_rng(7)
    didt = 123e6
    for _ in range(4):
        r0 = rng.normal(size=3)
        r0 *= rng.uniform(0.09, 0.12) / np.linalg.norm(r0)
        m = rng.normal(size=3) * 1e-4
        r = rng.normal(size=3)
        r *= rng.uniform(0.01, 0.08) / np.linalg.norm(r)
        expected = _reciprocity_reference(r, r0, m, didt)
        got = dipole_efield(r + 0.02, r0 + 0.02, m, [0.02, 0.02, 0.02], didt)  # shifted frame: centre anywhere
        assert np.linalg.norm(got - expected) <= 1e-9 * np.linalg.norm(expected)


def test_radial_dipole_field_is_the_free_space_induced_field():
    """m parallel to r0: the primary field is tangential to every sphere, no charge builds up,
    and E = −∂A/∂t = −(μ₀/4π)(dI/dt) m × (r − r0)/|r − r0|³ exactly."""
    r0 = np.array([0.01, -0.02, 0.095])
    m = 3e-4 * r0 / np.linalg.norm(r0)
    points = np.array([[0.0, 0.0, 0.06], [0.02, 0.01, 0.05], [-0.03, 0.02, 0.01]])
    delta = points - r0
    expected = -1e-7 * DIDT * np.cross(m, delta) / np.linalg.norm(delta, axis=1, keepdims=True) ** 3
    got = dipole_efield(points, r0[None], m[None], np.zeros(3), DIDT)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------
# published magnitude
# --------------------------------------------------------------------------


def test_d70_field_20_mm_deep_is_in_the_published_range(d70, head_sphere):
    """|E| 20 mm below the scalp (85-mm sphere, 4 mm gap) at 100 A/us: 70-140 V/m.

    Range: the issue's "on the order of 100 V/m", bracketing SimNIBS's two Magstim 70-mm models
    under the same conditions (read with read_ccd, not stored here): 102.1 V/m for the X-ray model
    of Thielscher & Kammer 2004, 90.2 V/m for the measured D70 of Drakaki et al. 2022.  This model
    gives 101.9 V/m.
    """
    e = efield_at_points(d70, _vertex_pose(), [[0.0, 0.0, RADIUS_MM - 20.0]], head_sphere, DIDT)[0]
    assert 70.0 <= np.linalg.norm(e) <= 140.0


# --------------------------------------------------------------------------
# pose search
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sphere_mesh():
    """Scalp of an 85-mm ball: marching cubes on a 2-mm voxel ball, vertices moved onto the sphere."""
    grid = np.indices((110, 110, 110)).astype(float) * 2.0 - 109.0
    ball = (np.sum(grid**2, axis=0) <= RADIUS_MM**2).astype(np.uint8)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -109.0
    mesh = mask_surface(nib.Nifti1Image(ball, affine), smoothing_mm=2.0)
    unit = mesh.vertices_ras_mm / np.linalg.norm(mesh.vertices_ras_mm, axis=1, keepdims=True)
    return SurfaceMesh(unit * RADIUS_MM, mesh.faces, unit)


def test_local_sphere_fit_recovers_the_sphere(sphere_mesh):
    sphere = fit_local_sphere(sphere_mesh.vertices_ras_mm, [0.0, 0.0, RADIUS_MM], 40.0)
    assert abs(sphere.radius_mm - RADIUS_MM) < 1e-6
    assert np.linalg.norm(sphere.centre_ras_mm) < 1e-6
    assert sphere.n_points > 100


def test_search_finds_the_analytic_optimum_angle(d70, sphere_mesh):
    """Target on the axis of a coil at the vertex: by the coil's two mirror symmetries E there is
    along the coil's y axis, E = E0·y with y = (−sin θ, cos θ, 0) at handle angle θ, so
    E·x̂ = −E0 sin θ: extreme at 90° and 270°, and 270° is nearer the planned 250°."""
    target = [0.0, 0.0, RADIUS_MM - 20.0]
    scalp = [0.0, 0.0, RADIUS_MM]
    result = search_poses(
        d70, target, sphere_mesh, _vertex_pose(250.0), scalp, didt_a_per_s=DIDT, direction_ras=[1.0, 0.0, 0.0], rings=0
    )
    theta = np.deg2rad(result.curve_angles_deg)
    e0 = np.linalg.norm(efield_at_points(d70, _vertex_pose(), [target], Sphere(np.zeros(3), RADIUS_MM), DIDT)[0])
    curve = result.objective(result.curve_e_ras_v_per_m)
    np.testing.assert_allclose(curve, -e0 * np.sin(theta), rtol=0, atol=1e-9 * e0)
    assert result.candidates.poses_ras.shape[:2] == (1, 72)
    assert result.best_angle_deg == 270.0
    assert result.best_index[0] == 0
    assert result.objective_v_per_m[result.best_index] == pytest.approx(e0, rel=1e-3)
    assert result.planned_angle_deg == pytest.approx(250.0, abs=1e-9)
    summary = result.as_dict()
    assert summary["best"]["handle_angle_deg"] == 270.0
    assert len(summary["angle_curve"]) == 72


def test_search_covers_25_centres_within_10_mm_and_beats_the_plan(d70, sphere_mesh):
    direction = np.array([0.3, 0.5, 0.81])
    scalp = RADIUS_MM * direction / np.linalg.norm(direction)
    target = scalp * (RADIUS_MM - 22.0) / RADIUS_MM + [6.0, -3.0, 0.0]
    planned = pose_from_handle(scalp, -scalp, [0.0, -1.0, 0.0])  # as the plan makes it: casing on the scalp
    result = search_poses(d70, target, sphere_mesh, planned, scalp, didt_a_per_s=DIDT)
    np.testing.assert_allclose(result.planned_pose_ras[:3, 3], scalp * (RADIUS_MM + GAP_MM) / RADIUS_MM, atol=1e-9)
    np.testing.assert_allclose(result.planned_pose_ras[:3, :3], planned[:3, :3])
    centres = result.candidates.scalp_ras_mm
    assert len(centres) == 25 and len(result.candidates.angles_deg) == 72
    assert np.max(np.linalg.norm(centres - scalp, axis=1)) <= 10.0 + 1e-6
    gaps = np.linalg.norm(result.candidates.poses_ras[:, 0, :3, 3], axis=1) - RADIUS_MM
    np.testing.assert_allclose(gaps, GAP_MM, atol=0.05)
    best = result.objective_v_per_m[result.best_index]
    assert best >= result.objective(result.planned_e_ras_v_per_m)
    assert best >= result.objective_v_per_m.max() * (1 - 1e-3)  # ties within 0.1 % go to the planned angle
    # every candidate's field equals the field of its pose computed directly
    c, a = 7, 13
    direct = efield_at_points(d70, result.candidates.poses_ras[c, a], [target], result.sphere, DIDT)[0]
    np.testing.assert_allclose(result.e_ras_v_per_m[c, a], direct, rtol=1e-10)


@pytest.mark.shared_data
def test_search_on_a_real_head(shared_data):
    """The full default search on the real T1: a sphere that fits the scalp patch, every candidate on
    the scalp within 10 mm, the coil outside the head, a 20-mm-deep target at 60-200 V/m (D70 at
    its Rapid dI/dt), and the search well under the issue's 10 s."""
    mesh = scalp_surface(nib.load(shared_data / "pydecnef-sub1" / "anat" / "T1w.nii.gz"))
    centre = mesh.centroid_ras_mm
    direction = np.array([-0.45, 0.55, 0.70]) / np.linalg.norm([-0.45, 0.55, 0.70])
    hit = centre + ray_hits(centre, direction, mesh).max() * direction
    placement = place_coil(hit - 20.0 * direction, mesh)
    result = search_poses(
        builtin_coil("Magstim_D70"), hit - 20.0 * direction, mesh, placement.pose_ras, placement.scalp_ras_mm
    )
    assert 60.0 < result.sphere.radius_mm < 120.0 and result.sphere.rms_residual_mm < 2.0
    assert result.e_ras_v_per_m.shape == (25, 72, 3)
    assert np.max(np.linalg.norm(result.candidates.scalp_ras_mm - placement.scalp_ras_mm, axis=1)) <= 10.0 + 1e-6
    assert 60.0 < result.objective_v_per_m[result.best_index] < 200.0
    assert result.timing_s < 10.0


def test_handle_angle_convention_matches_the_coil_placement():
    """0° = handle posterior; 90° = handle to the right at the vertex (counter-clockwise from above)."""
    centre = [0.0, 0.0, 90.0]
    z = [0.0, 0.0, -1.0]
    assert handle_angle_deg(pose_from_handle(centre, z, [0.0, -1.0, 0.0])) == pytest.approx(0.0, abs=1e-9)
    assert handle_angle_deg(pose_from_handle(centre, z, [1.0, 0.0, 0.0])) == pytest.approx(90.0)
    assert handle_angle_deg(pose_from_handle(centre, z, [-1.0, -1.0, 0.0])) == pytest.approx(315.0)
    pose = poses_at_angles(centre, [0.0, 0.0, 1.0], [90.0])[0]
    np.testing.assert_allclose(-pose[:3, 1], [1.0, 0.0, 0.0], atol=1e-12)


# --------------------------------------------------------------------------
# SimNIBS .ccd files
# --------------------------------------------------------------------------

CCD_TEXT = """\
# Test Coil version 1.1;dIdtmax=100.0;x=-100,100;y=-100,100;z=-100,100;resolution=10;coilname=Test coil
4
# centers and weighted directions of the elements (magnetic dipoles)
-0.01 0 -0.001 1e-6 0 2e-6
0.01 0 -0.001 -1e-6 0 -2e-6
-0.02 0.02 -0.002 0 1e-6 0
0.02 -0.02 -0.002 0 -1e-6 0
"""


def test_read_ccd_hand_written_file(tmp_path):
    path = tmp_path / "test.ccd"
    path.write_text(CCD_TEXT, encoding="utf-8")
    coil = read_ccd(path)
    assert coil.name == "Test coil"
    assert coil.didt_a_per_s == pytest.approx(100e6)
    np.testing.assert_array_equal(coil.positions_m[2], [-0.02, 0.02, -0.002])
    np.testing.assert_array_equal(coil.moments_m2[1], [-1e-6, 0.0, -2e-6])
    assert read_ccd(path, didt_a_per_s=50e6).didt_a_per_s == 50e6
    out = tmp_path / "copy.ccd"
    write_ccd(out, coil)
    again = read_ccd(out)
    np.testing.assert_array_equal(again.positions_m, coil.positions_m)
    np.testing.assert_array_equal(again.moments_m2, coil.moments_m2)
    assert again.name == coil.name and again.didt_a_per_s == pytest.approx(coil.didt_a_per_s)


def test_read_ccd_without_header_fields_has_no_didt(tmp_path):
    path = tmp_path / "plain.ccd"
    path.write_text("# plain.ccd version 1.0 number of elements\n1\n0 0 -0.005 0 0 1e-4\n", encoding="utf-8")
    coil = read_ccd(path)
    assert coil.name == "plain" and coil.didt_a_per_s is None
    with pytest.raises(InputError, match="no dI/dt"):
        efield_at_points(coil, _vertex_pose(), [[0, 0, 70.0]], Sphere(np.zeros(3), RADIUS_MM))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CCD_TEXT.replace("0.01 0 -0.001 -1e-6 0 -2e-6", "0.01 0 -0.001 -1e-6 0"), r"bad\.ccd: line 5: expected 6"),
        (CCD_TEXT.replace("0.01 0 -0.001 -1e-6 0 -2e-6", "0.01 0 -0.001 -1e-6 0 x"), r"bad\.ccd: line 5: expected 6"),
        (CCD_TEXT.replace("\n4\n", "\n5\n"), "header says 5 dipoles but the file holds 4"),
        (CCD_TEXT.replace("\n4\n", "\nfour\n"), "line 2: expected the number of dipoles"),
        (CCD_TEXT.replace("-0.02 0.02 -0.002", "-20 20 -2"), "in metres"),
        (CCD_TEXT.replace("dIdtmax=100.0", "dIdtmax=fast"), "dIdtmax"),
        ("", "no dipole count"),
    ],
)
def test_read_ccd_rejects_bad_files_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.ccd"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_ccd(path)


def test_read_ccd_missing_file(tmp_path):
    with pytest.raises(InputError, match="coil file not found"):
        read_ccd(tmp_path / "absent.ccd")


def test_builtin_coil_names_ignore_case_and_separators():
    for name in ("magstim-d70", "MAGSTIM_D70", "d70", "Magstim 70mm"):
        assert builtin_coil(name, element_m=0.007).name == "Magstim_D70"
    assert builtin_coil("mc_b70", element_m=0.007).name == "MagVenture_MC-B70"
    assert builtin_coil("coolb65", element_m=0.007).name == "MagVenture_Cool-B65"


def test_unknown_builtin_coil_lists_the_known_ones():
    with pytest.raises(InputError, match="Magstim_D70"):
        builtin_coil("Magstim_Alpha")


@pytest.mark.parametrize("name", sorted(BUILTIN_COILS))
def test_builtin_coils_are_figure8_with_sources(name):
    coil = builtin_coil(name)
    assert coil.n_dipoles >= 1000
    assert coil.didt_a_per_s > 50e6 and "Drakaki" in coil.didt_source and len(coil.source) > 100
    assert np.all(coil.positions_m[:, 2] < 0)  # windings above the casing face (z into the head)
    left = coil.positions_m[:, 0] < 0
    wing = coil.moments_m2[left].sum(axis=0)
    np.testing.assert_allclose(coil.moments_m2[~left].sum(axis=0), -wing, rtol=1e-12)  # opposite wings
    assert abs(wing[2]) > 0.01  # about 0.02-0.04 m^2 per wing


def test_search_refuses_impossible_inputs(d70, sphere_mesh):
    scalp = [0.0, 0.0, RADIUS_MM]
    planned = _vertex_pose()
    with pytest.raises(OrientationError, match="outside the head sphere"):
        search_poses(d70, [0.0, 0.0, RADIUS_MM + 3], sphere_mesh, planned, scalp, didt_a_per_s=DIDT)
    with pytest.raises(InputError, match="direction_ras"):
        search_poses(d70, [0, 0, 60.0], sphere_mesh, planned, scalp, didt_a_per_s=DIDT, direction_ras=[0, 0, 0])
    with pytest.raises(InputError, match="divide 360"):
        search_poses(d70, [0, 0, 60.0], sphere_mesh, planned, scalp, didt_a_per_s=DIDT, angle_step_deg=7)
    with pytest.raises(InputError, match="scalp vertices"):
        fit_local_sphere(sphere_mesh.vertices_ras_mm, [0.0, 0.0, 200.0], 40.0)
