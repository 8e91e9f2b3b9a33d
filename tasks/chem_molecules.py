"""The real, named molecules the chemistry set (`cort_chem`) asks about.

Each entry: name as a chemist writes it, SMILES, the molecular formula from the literature (PubChem),
and a kind. `tests/test_chem.py` checks with RDKit that every SMILES parses, that its formula is the
stated one, and that the stereocentres of the stereo-defined entries carry the CIP labels their names
or their well-known configurations imply (`CIP`). The order of the tuple is part of the set's
definition (generation samples from it by position): only ever append, and bump the set's version.
Pure data: importing this module needs no RDKit.
"""

from __future__ import annotations

from typing import NamedTuple


class Molecule(NamedTuple):
    name: str
    smiles: str
    formula: str  # from the literature; checked against RDKit in the tests
    kind: str  # drug | solvent | natural | amino_acid | sugar | organic | reagent


MOLECULES: tuple[Molecule, ...] = (
    # Drugs
    Molecule("aspirin", "CC(=O)Oc1ccccc1C(=O)O", "C9H8O4", "drug"),
    Molecule("caffeine", "Cn1cnc2c1c(=O)n(C)c(=O)n2C", "C8H10N4O2", "drug"),
    Molecule("paracetamol", "CC(=O)Nc1ccc(O)cc1", "C8H9NO2", "drug"),
    Molecule("ibuprofen", "CC(C)Cc1ccc(cc1)C(C)C(=O)O", "C13H18O2", "drug"),
    Molecule("(S)-naproxen", "C[C@H](C(=O)O)c1ccc2cc(OC)ccc2c1", "C14H14O3", "drug"),
    Molecule("diclofenac", "OC(=O)Cc1ccccc1Nc1c(Cl)cccc1Cl", "C14H11Cl2NO2", "drug"),
    Molecule("metformin", "CN(C)C(=N)N=C(N)N", "C4H11N5", "drug"),
    Molecule("(S)-nicotine", "CN1CCC[C@H]1c1cccnc1", "C10H14N2", "drug"),
    Molecule("lidocaine", "CCN(CC)CC(=O)Nc1c(C)cccc1C", "C14H22N2O", "drug"),
    Molecule("phenacetin", "CCOc1ccc(NC(C)=O)cc1", "C10H13NO2", "drug"),
    Molecule("benzocaine", "CCOC(=O)c1ccc(N)cc1", "C9H11NO2", "drug"),
    Molecule("procaine", "CCN(CC)CCOC(=O)c1ccc(N)cc1", "C13H20N2O2", "drug"),
    Molecule("sulfamethoxazole", "Cc1cc(NS(=O)(=O)c2ccc(N)cc2)no1", "C10H11N3O3S", "drug"),
    Molecule("fluoxetine", "CNCCC(Oc1ccc(cc1)C(F)(F)F)c1ccccc1", "C17H18F3NO", "drug"),
    Molecule("diazepam", "CN1C(=O)CN=C(c2ccccc2)c2cc(Cl)ccc21", "C16H13ClN2O", "drug"),
    Molecule("theophylline", "Cn1c2nc[nH]c2c(=O)n(C)c1=O", "C7H8N4O2", "drug"),
    Molecule("theobromine", "Cn1cnc2c1c(=O)[nH]c(=O)n2C", "C7H8N4O2", "drug"),
    Molecule("(R)-adrenaline", "CNC[C@H](O)c1ccc(O)c(O)c1", "C9H13NO3", "drug"),
    Molecule("dopamine", "NCCc1ccc(O)c(O)c1", "C8H11NO2", "drug"),
    Molecule("serotonin", "NCCc1c[nH]c2ccc(O)cc12", "C10H12N2O", "drug"),
    Molecule("(1R,2S)-ephedrine", "CN[C@@H](C)[C@H](O)c1ccccc1", "C10H15NO", "drug"),
    Molecule("mefenamic acid", "Cc1cccc(Nc2ccccc2C(=O)O)c1C", "C15H15NO2", "drug"),
    Molecule("warfarin", "CC(=O)CC(c1ccccc1)c1c(O)c2ccccc2oc1=O", "C19H16O4", "drug"),
    Molecule("propranolol", "CC(C)NCC(O)COc1cccc2ccccc12", "C16H21NO2", "drug"),
    Molecule("atenolol", "CC(C)NCC(O)COc1ccc(CC(N)=O)cc1", "C14H22N2O3", "drug"),
    Molecule("ketamine", "CNC1(CCCCC1=O)c1ccccc1Cl", "C13H16ClNO", "drug"),
    Molecule("isoniazid", "NNC(=O)c1ccncc1", "C6H7N3O", "drug"),
    Molecule("metronidazole", "Cc1ncc([N+](=O)[O-])n1CCO", "C6H9N3O3", "drug"),
    Molecule("nitroglycerin", "O=[N+]([O-])OCC(CO[N+](=O)[O-])O[N+](=O)[O-]", "C3H5N3O9", "drug"),
    Molecule("morphine", "CN1CC[C@]23c4c5ccc(O)c4O[C@H]2[C@@H](O)C=C[C@H]3[C@H]1C5", "C17H19NO3", "drug"),
    Molecule(
        "testosterone", "C[C@]12CC[C@H]3[C@@H](CCC4=CC(=O)CC[C@]34C)[C@@H]1CC[C@@H]2O", "C19H28O2", "drug"
    ),
    # Solvents
    Molecule("methanol", "CO", "CH4O", "solvent"),
    Molecule("ethanol", "CCO", "C2H6O", "solvent"),
    Molecule("acetone", "CC(C)=O", "C3H6O", "solvent"),
    Molecule("acetic acid", "CC(=O)O", "C2H4O2", "solvent"),
    Molecule("benzene", "c1ccccc1", "C6H6", "solvent"),
    Molecule("toluene", "Cc1ccccc1", "C7H8", "solvent"),
    Molecule("pyridine", "c1ccncc1", "C5H5N", "solvent"),
    Molecule("chloroform", "ClC(Cl)Cl", "CHCl3", "solvent"),
    Molecule("dichloromethane", "ClCCl", "CH2Cl2", "solvent"),
    Molecule("dimethyl sulfoxide", "CS(C)=O", "C2H6OS", "solvent"),
    Molecule("N,N-dimethylformamide", "CN(C)C=O", "C3H7NO", "solvent"),
    Molecule("tetrahydrofuran", "C1CCOC1", "C4H8O", "solvent"),
    Molecule("acetonitrile", "CC#N", "C2H3N", "solvent"),
    Molecule("ethyl acetate", "CCOC(C)=O", "C4H8O2", "solvent"),
    Molecule("diethyl ether", "CCOCC", "C4H10O", "solvent"),
    Molecule("hexane", "CCCCCC", "C6H14", "solvent"),
    Molecule("cyclohexane", "C1CCCCC1", "C6H12", "solvent"),
    Molecule("1,4-dioxane", "C1COCCO1", "C4H8O2", "solvent"),
    # Natural products
    Molecule("(R)-carvone", "C=C(C)[C@@H]1CC=C(C)C(=O)C1", "C10H14O", "natural"),
    Molecule("(-)-menthol", "CC(C)[C@@H]1CC[C@@H](C)C[C@H]1O", "C10H20O", "natural"),
    Molecule("(R)-limonene", "CC1=CC[C@@H](CC1)C(C)=C", "C10H16", "natural"),
    Molecule("camphor", "CC1(C)C2CCC1(C)C(=O)C2", "C10H16O", "natural"),
    Molecule("vanillin", "COc1cc(C=O)ccc1O", "C8H8O3", "natural"),
    Molecule("capsaicin", "COc1cc(CNC(=O)CCCC/C=C/C(C)C)ccc1O", "C18H27NO3", "natural"),
    Molecule("cinnamaldehyde", "O=C/C=C/c1ccccc1", "C9H8O", "natural"),
    Molecule("eugenol", "COc1cc(CC=C)ccc1O", "C10H12O2", "natural"),
    Molecule("thymol", "Cc1ccc(C(C)C)c(O)c1", "C10H14O", "natural"),
    Molecule("geraniol", "CC(C)=CCC/C(C)=C/CO", "C10H18O", "natural"),
    Molecule("resveratrol", "Oc1ccc(/C=C/c2cc(O)cc(O)c2)cc1", "C14H12O3", "natural"),
    Molecule("citric acid", "OC(=O)CC(O)(CC(=O)O)C(=O)O", "C6H8O7", "natural"),
    Molecule("L-lactic acid", "C[C@H](O)C(=O)O", "C3H6O3", "natural"),
    Molecule("L-ascorbic acid", "OC[C@H](O)[C@H]1OC(=O)C(O)=C1O", "C6H8O6", "natural"),
    Molecule(
        "cholesterol",
        "CC(C)CCC[C@@H](C)[C@H]1CC[C@H]2[C@@H]3CC=C4C[C@@H](O)CC[C@]4(C)[C@H]3CC[C@]12C",
        "C27H46O",
        "natural",
    ),
    Molecule("trans-cinnamic acid", "OC(=O)/C=C/c1ccccc1", "C9H8O2", "natural"),
    # Sugars
    Molecule("beta-D-glucose", "OC[C@H]1O[C@@H](O)[C@H](O)[C@@H](O)[C@@H]1O", "C6H12O6", "sugar"),
    Molecule("glycerol", "OCC(O)CO", "C3H8O3", "sugar"),
    # Amino acids (L, as in proteins)
    Molecule("glycine", "NCC(=O)O", "C2H5NO2", "amino_acid"),
    Molecule("L-alanine", "C[C@H](N)C(=O)O", "C3H7NO2", "amino_acid"),
    Molecule("L-valine", "CC(C)[C@H](N)C(=O)O", "C5H11NO2", "amino_acid"),
    Molecule("L-leucine", "CC(C)C[C@H](N)C(=O)O", "C6H13NO2", "amino_acid"),
    Molecule("L-isoleucine", "CC[C@H](C)[C@H](N)C(=O)O", "C6H13NO2", "amino_acid"),
    Molecule("L-serine", "N[C@@H](CO)C(=O)O", "C3H7NO3", "amino_acid"),
    Molecule("L-threonine", "C[C@@H](O)[C@H](N)C(=O)O", "C4H9NO3", "amino_acid"),
    Molecule("L-cysteine", "N[C@@H](CS)C(=O)O", "C3H7NO2S", "amino_acid"),
    Molecule("L-methionine", "CSCC[C@H](N)C(=O)O", "C5H11NO2S", "amino_acid"),
    Molecule("L-phenylalanine", "N[C@@H](Cc1ccccc1)C(=O)O", "C9H11NO2", "amino_acid"),
    Molecule("L-tyrosine", "N[C@@H](Cc1ccc(O)cc1)C(=O)O", "C9H11NO3", "amino_acid"),
    Molecule("L-tryptophan", "N[C@@H](Cc1c[nH]c2ccccc12)C(=O)O", "C11H12N2O2", "amino_acid"),
    Molecule("L-proline", "OC(=O)[C@@H]1CCCN1", "C5H9NO2", "amino_acid"),
    Molecule("L-aspartic acid", "N[C@@H](CC(=O)O)C(=O)O", "C4H7NO4", "amino_acid"),
    Molecule("L-glutamic acid", "N[C@@H](CCC(=O)O)C(=O)O", "C5H9NO4", "amino_acid"),
    Molecule("L-lysine", "NCCCC[C@H](N)C(=O)O", "C6H14N2O2", "amino_acid"),
    Molecule("L-histidine", "N[C@@H](Cc1c[nH]cn1)C(=O)O", "C6H9N3O2", "amino_acid"),
    # Simple organics
    Molecule("phenol", "Oc1ccccc1", "C6H6O", "organic"),
    Molecule("aniline", "Nc1ccccc1", "C6H7N", "organic"),
    Molecule("naphthalene", "c1ccc2ccccc2c1", "C10H8", "organic"),
    Molecule("anthracene", "c1ccc2cc3ccccc3cc2c1", "C14H10", "organic"),
    Molecule("biphenyl", "c1ccc(-c2ccccc2)cc1", "C12H10", "organic"),
    Molecule("indole", "c1ccc2[nH]ccc2c1", "C8H7N", "organic"),
    Molecule("quinoline", "c1ccc2ncccc2c1", "C9H7N", "organic"),
    Molecule("furan", "c1ccoc1", "C4H4O", "organic"),
    Molecule("thiophene", "c1ccsc1", "C4H4S", "organic"),
    Molecule("pyrrole", "c1cc[nH]c1", "C4H5N", "organic"),
    Molecule("imidazole", "c1c[nH]cn1", "C3H4N2", "organic"),
    Molecule("nitrobenzene", "O=[N+]([O-])c1ccccc1", "C6H5NO2", "organic"),
    Molecule(
        "2,4,6-trinitrotoluene", "Cc1c([N+](=O)[O-])cc([N+](=O)[O-])cc1[N+](=O)[O-]", "C7H5N3O6", "organic"
    ),
    Molecule("benzoic acid", "OC(=O)c1ccccc1", "C7H6O2", "organic"),
    Molecule("salicylic acid", "OC(=O)c1ccccc1O", "C7H6O3", "organic"),
    Molecule("benzaldehyde", "O=Cc1ccccc1", "C7H6O", "organic"),
    Molecule("acetophenone", "CC(=O)c1ccccc1", "C8H8O", "organic"),
    Molecule("styrene", "C=Cc1ccccc1", "C8H8", "organic"),
    Molecule("cyclohexene", "C1=CCCCC1", "C6H10", "organic"),
    Molecule("cyclohexanone", "O=C1CCCCC1", "C6H10O", "organic"),
    Molecule("urea", "NC(N)=O", "CH4N2O", "organic"),
    Molecule("ethylene glycol", "OCCO", "C2H6O2", "organic"),
    Molecule("oxalic acid", "OC(=O)C(=O)O", "C2H2O4", "organic"),
    Molecule("succinic acid", "OC(=O)CCC(=O)O", "C4H6O4", "organic"),
    Molecule("adipic acid", "OC(=O)CCCCC(=O)O", "C6H10O4", "organic"),
    Molecule("phenylacetic acid", "OC(=O)Cc1ccccc1", "C8H8O2", "organic"),
    Molecule("propanoic acid", "CCC(=O)O", "C3H6O2", "organic"),
    Molecule("butanoic acid", "CCCC(=O)O", "C4H8O2", "organic"),
    Molecule("1-propanol", "CCCO", "C3H8O", "organic"),
    Molecule("2-propanol", "CC(C)O", "C3H8O", "organic"),
    Molecule("1-butanol", "CCCCO", "C4H10O", "organic"),
    Molecule("benzyl alcohol", "OCc1ccccc1", "C7H8O", "organic"),
    Molecule("3-methylbutan-1-ol", "CC(C)CCO", "C5H12O", "organic"),
    Molecule("methylamine", "CN", "CH5N", "organic"),
    Molecule("ethylamine", "CCN", "C2H7N", "organic"),
    Molecule("diethylamine", "CCNCC", "C4H11N", "organic"),
    Molecule("benzylamine", "NCc1ccccc1", "C7H9N", "organic"),
    Molecule("4-aminophenol", "Nc1ccc(O)cc1", "C6H7NO", "organic"),
    Molecule("4-ethoxyaniline", "CCOc1ccc(N)cc1", "C8H11NO", "organic"),
    Molecule("methane", "C", "CH4", "organic"),
    Molecule("propane", "CCC", "C3H8", "organic"),
    Molecule("octane", "CCCCCCCC", "C8H18", "organic"),
    # Reagents and co-products (named in reactions and mass balances)
    Molecule("acetic anhydride", "CC(=O)OC(C)=O", "C4H6O3", "reagent"),
    Molecule("water", "O", "H2O", "reagent"),
    Molecule("carbon dioxide", "O=C=O", "CO2", "reagent"),
    Molecule("oxygen", "O=O", "O2", "reagent"),
    Molecule("hydrogen", "[H][H]", "H2", "reagent"),
)

# CIP labels of the stereocentres of stereo-defined entries, as their names or their established
# configurations state them, in the order the centres appear in the SMILES (checked with RDKit's new
# CIP labeller in the tests).
CIP: dict[str, tuple[str, ...]] = {
    "(S)-naproxen": ("S",),
    "(S)-nicotine": ("S",),
    "(R)-adrenaline": ("R",),
    "(1R,2S)-ephedrine": ("S", "R"),  # C2 (N), then C1 (OH)
    "(R)-carvone": ("R",),
    "(-)-menthol": ("S", "R", "R"),  # (1R,2S,5R): C2, C5, C1
    "(R)-limonene": ("R",),
    "L-lactic acid": ("S",),
    "L-ascorbic acid": ("S", "R"),  # (5R)-5-[(1S)-1,2-dihydroxyethyl]: side chain, then ring
    "beta-D-glucose": ("R", "R", "R", "S", "S"),  # C5, C1 (beta), C2, C3, C4
    "L-alanine": ("S",),
    "L-valine": ("S",),
    "L-leucine": ("S",),
    "L-isoleucine": ("S", "S"),
    "L-serine": ("S",),
    "L-threonine": ("R", "S"),  # (2S,3R): C3, then C2
    "L-cysteine": ("R",),
    "L-methionine": ("S",),
    "L-phenylalanine": ("S",),
    "L-tyrosine": ("S",),
    "L-tryptophan": ("S",),
    "L-proline": ("S",),
    "L-aspartic acid": ("S",),
    "L-glutamic acid": ("S",),
    "L-lysine": ("S",),
    "L-histidine": ("S",),
}

# Standard InChIKeys (PubChem) of the larger stereo-defined natural products, checked in the tests
# when RDKit has InChI support.
INCHIKEYS: dict[str, str] = {
    "morphine": "BQJCRHHNABKAKU-KBQPJGBKSA-N",
    "testosterone": "MUMGGOZAMZWBJJ-DYKIIFRCSA-N",
    "cholesterol": "HVYWMOMLDIMFJA-DPAQBDIFSA-N",
    "beta-D-glucose": "WQZGKKKJIJFFOK-VFUOTHLCSA-N",
    "aspirin": "BSYNRYMUTXBXSQ-UHFFFAOYSA-N",
    "caffeine": "RYYVLZVUVIJVGH-UHFFFAOYSA-N",
}


def by_name() -> dict[str, Molecule]:
    return {m.name: m for m in MOLECULES}
