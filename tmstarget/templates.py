"""Names (TemplateFlow's) of the two MNI templates tmstarget meets; never call one the other.

The paper coordinates of ``data/atlas.toml`` are in neither: see its ``coordinate_space``.
"""

#: fMRIPrep's default template: the space of fMRIPrep's MNI-space inputs and transforms.
FMRIPREP_MNI_SPACE = "MNI152NLin2009cAsym"
#: The template nilearn ships (``datasets.load_mni152_template`` and its GM/WM/brain masks), which tmstarget
#: registers T1s to: ICBM152 2009 release a, *symmetric* (nilearn downloads ``mni_icbm152_nlin_sym_09a``;
#: nilearn's own note calls it asymmetrical, its archive name says otherwise).
NILEARN_MNI_SPACE = "MNI152NLin2009aSym"
