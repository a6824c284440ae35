"""USPS reference tables used by :mod:`skiptrace.normalize`.

Kept apart from the normalization logic because they are long and are data, not
behaviour. Everything here is plain module-level dicts and frozensets so a reader
can check a row against the publication without running anything.

Sources: USPS Publication 28, Appendix C1 (street suffixes and their primary names),
Appendix B/section 233 (directionals), Appendix B (state and territory codes, including
the freely-associated states and the Armed Forces codes AA/AE/AP).

Not from the publication but derived from it for :mod:`skiptrace.street_parser`: how a
suffix word is spelled when it is part of a street *name* (NAME_SPELLINGS, built from C1
below), and which suffixes make a lone directional the street's name (THOROUGHFARE_TYPES)
or take a route number (ROUTE_TYPES).
"""

from __future__ import annotations

# Publication 28, Appendix C1: standard suffix abbreviation -> every spelling the
# publication lists for it ("commonly used street suffix or abbreviation").
# The standard abbreviation itself is always included among the spellings.
# Omitted on purpose: the obsolete "CK"/"CR" for CREEK ("CR" is County Road in
# most lead lists), and "MDW" under MEADOWS (it is MEADOW's own abbreviation).
_SUFFIX_SPELLINGS: dict[str, tuple[str, ...]] = {
    "ALY": ("ALLEE", "ALLEY", "ALLY", "ALY"),
    "ANX": ("ANEX", "ANNEX", "ANNX", "ANX"),
    "ARC": ("ARC", "ARCADE"),
    "AVE": ("AV", "AVE", "AVEN", "AVENU", "AVENUE", "AVN", "AVNUE"),
    "BYU": ("BAYOO", "BAYOU", "BYU"),
    "BCH": ("BCH", "BEACH"),
    "BND": ("BEND", "BND"),
    "BLF": ("BLF", "BLUF", "BLUFF"),
    "BLFS": ("BLFS", "BLUFFS"),
    "BTM": ("BOT", "BTM", "BOTTM", "BOTTOM"),
    "BLVD": ("BLVD", "BOUL", "BOULEVARD", "BOULV"),
    "BR": ("BR", "BRNCH", "BRANCH"),
    "BRG": ("BRDGE", "BRG", "BRIDGE"),
    "BRK": ("BRK", "BROOK"),
    "BRKS": ("BRKS", "BROOKS"),
    "BG": ("BG", "BURG"),
    "BGS": ("BGS", "BURGS"),
    "BYP": ("BYP", "BYPA", "BYPAS", "BYPASS", "BYPS"),
    "CP": ("CAMP", "CP", "CMP"),
    "CYN": ("CANYN", "CANYON", "CNYN", "CYN"),
    "CPE": ("CAPE", "CPE"),
    "CSWY": ("CAUSEWAY", "CAUSWA", "CSWY"),
    "CTR": ("CEN", "CENT", "CENTER", "CENTR", "CENTRE", "CNTER", "CNTR", "CTR"),
    "CTRS": ("CENTERS", "CTRS"),
    "CIR": ("CIR", "CIRC", "CIRCL", "CIRCLE", "CRCL", "CRCLE"),
    "CIRS": ("CIRCLES", "CIRS"),
    "CLF": ("CLF", "CLIFF"),
    "CLFS": ("CLFS", "CLIFFS"),
    "CLB": ("CLB", "CLUB"),
    "CMN": ("CMN", "COMMON"),
    "CMNS": ("CMNS", "COMMONS"),
    "COR": ("COR", "CORNER"),
    "CORS": ("CORNERS", "CORS"),
    "CRSE": ("COURSE", "CRSE"),
    "CT": ("COURT", "CT"),
    "CTS": ("COURTS", "CTS"),
    "CV": ("COVE", "CV"),
    "CVS": ("COVES", "CVS"),
    "CRK": ("CREEK", "CRK"),
    "CRES": ("CRESCENT", "CRES", "CRSENT", "CRSNT"),
    "CRST": ("CREST", "CRST"),
    "XING": ("CROSSING", "CRSSNG", "XING"),
    "XRD": ("CROSSROAD", "XRD"),
    "XRDS": ("CROSSROADS", "XRDS"),
    "CURV": ("CURVE", "CURV"),
    "DL": ("DALE", "DL"),
    "DM": ("DAM", "DM"),
    "DV": ("DIV", "DIVIDE", "DV", "DVD"),
    "DR": ("DR", "DRIV", "DRIVE", "DRV"),
    "DRS": ("DRIVES", "DRS"),
    "EST": ("EST", "ESTATE"),
    "ESTS": ("ESTATES", "ESTS"),
    "EXPY": ("EXP", "EXPR", "EXPRESS", "EXPRESSWAY", "EXPW", "EXPY"),
    "EXT": ("EXT", "EXTENSION", "EXTN", "EXTNSN"),
    "EXTS": ("EXTENSIONS", "EXTS"),
    "FALL": ("FALL",),
    "FLS": ("FALLS", "FLS"),
    "FRY": ("FERRY", "FRRY", "FRY"),
    "FLD": ("FIELD", "FLD"),
    "FLDS": ("FIELDS", "FLDS"),
    "FLT": ("FLAT", "FLT"),
    "FLTS": ("FLATS", "FLTS"),
    "FRD": ("FORD", "FRD"),
    "FRDS": ("FORDS", "FRDS"),
    "FRST": ("FOREST", "FORESTS", "FRST"),
    "FRG": ("FORG", "FORGE", "FRG"),
    "FRGS": ("FORGES", "FRGS"),
    "FRK": ("FORK", "FRK"),
    "FRKS": ("FORKS", "FRKS"),
    "FT": ("FORT", "FRT", "FT"),
    "FWY": ("FREEWAY", "FREEWY", "FRWAY", "FRWY", "FWY"),
    "GDN": ("GARDEN", "GARDN", "GRDEN", "GRDN", "GDN"),
    "GDNS": ("GARDENS", "GDNS", "GRDNS"),
    "GTWY": ("GATEWAY", "GATEWY", "GATWY", "GTWAY", "GTWY"),
    "GLN": ("GLEN", "GLN"),
    "GLNS": ("GLENS", "GLNS"),
    "GRN": ("GREEN", "GRN"),
    "GRNS": ("GREENS", "GRNS"),
    "GRV": ("GROV", "GROVE", "GRV"),
    "GRVS": ("GROVES", "GRVS"),
    "HBR": ("HARB", "HARBOR", "HARBR", "HBR", "HRBOR"),
    "HBRS": ("HARBORS", "HBRS"),
    "HVN": ("HAVEN", "HVN"),
    "HTS": ("HT", "HTS", "HEIGHTS"),
    "HWY": ("HIGHWAY", "HIGHWY", "HIWAY", "HIWY", "HWAY", "HWY"),
    "HL": ("HILL", "HL"),
    "HLS": ("HILLS", "HLS"),
    "HOLW": ("HLLW", "HOLLOW", "HOLLOWS", "HOLW", "HOLWS"),
    "INLT": ("INLET", "INLT"),
    "IS": ("IS", "ISLAND", "ISLND"),
    "ISS": ("ISLANDS", "ISLNDS", "ISS"),
    "ISLE": ("ISLE", "ISLES"),
    "JCT": ("JCT", "JCTION", "JCTN", "JUNCTION", "JUNCTN", "JUNCTON"),
    "JCTS": ("JCTNS", "JCTS", "JUNCTIONS"),
    "KY": ("KEY", "KY"),
    "KYS": ("KEYS", "KYS"),
    "KNL": ("KNL", "KNOL", "KNOLL"),
    "KNLS": ("KNLS", "KNOLLS"),
    "LK": ("LK", "LAKE"),
    "LKS": ("LKS", "LAKES"),
    "LAND": ("LAND",),
    "LNDG": ("LANDING", "LNDG", "LNDNG"),
    "LN": ("LANE", "LN"),
    "LGT": ("LGT", "LIGHT"),
    "LGTS": ("LGTS", "LIGHTS"),
    "LF": ("LF", "LOAF"),
    "LCK": ("LCK", "LOCK"),
    "LCKS": ("LCKS", "LOCKS"),
    "LDG": ("LDG", "LDGE", "LODG", "LODGE"),
    "LOOP": ("LOOP", "LOOPS"),
    "MALL": ("MALL",),
    "MNR": ("MNR", "MANOR"),
    "MNRS": ("MANORS", "MNRS"),
    "MDW": ("MDW", "MEADOW"),
    "MDWS": ("MDWS", "MEADOWS", "MEDOWS"),
    "MEWS": ("MEWS",),
    "ML": ("MILL", "ML"),
    "MLS": ("MILLS", "MLS"),
    "MSN": ("MISSN", "MSSN", "MSN", "MISSION"),
    "MTWY": ("MOTORWAY", "MTWY"),
    "MT": ("MNT", "MT", "MOUNT"),
    "MTN": ("MNTAIN", "MNTN", "MOUNTAIN", "MOUNTIN", "MTIN", "MTN"),
    "MTNS": ("MNTNS", "MOUNTAINS", "MTNS"),
    "NCK": ("NCK", "NECK"),
    "ORCH": ("ORCH", "ORCHARD", "ORCHRD"),
    "OVAL": ("OVAL", "OVL"),
    "OPAS": ("OVERPASS", "OPAS"),
    "PARK": ("PARK", "PRK", "PARKS"),
    "PKWY": ("PARKWAY", "PARKWY", "PKWAY", "PKWY", "PKY", "PARKWAYS", "PKWYS"),
    "PASS": ("PASS",),
    "PSGE": ("PASSAGE", "PSGE"),
    "PATH": ("PATH", "PATHS"),
    "PIKE": ("PIKE", "PIKES"),
    "PNE": ("PINE", "PNE"),
    "PNES": ("PINES", "PNES"),
    "PL": ("PL", "PLACE"),
    "PLN": ("PLAIN", "PLN"),
    "PLNS": ("PLAINS", "PLNS"),
    "PLZ": ("PLAZA", "PLZ", "PLZA"),
    "PT": ("POINT", "PT"),
    "PTS": ("POINTS", "PTS"),
    "PRT": ("PORT", "PRT"),
    "PRTS": ("PORTS", "PRTS"),
    "PR": ("PR", "PRAIRIE", "PRR"),
    "RADL": ("RAD", "RADIAL", "RADIEL", "RADL"),
    "RAMP": ("RAMP",),
    "RNCH": ("RANCH", "RANCHES", "RNCH", "RNCHS"),
    "RPD": ("RAPID", "RPD"),
    "RPDS": ("RAPIDS", "RPDS"),
    "RST": ("REST", "RST"),
    "RDG": ("RDG", "RDGE", "RIDGE"),
    "RDGS": ("RDGS", "RIDGES"),
    "RIV": ("RIV", "RIVER", "RVR", "RIVR"),
    "RD": ("RD", "ROAD"),
    "RDS": ("ROADS", "RDS"),
    "RTE": ("ROUTE", "RTE"),
    "ROW": ("ROW",),
    "RUE": ("RUE",),
    "RUN": ("RUN",),
    "SHL": ("SHL", "SHOAL"),
    "SHLS": ("SHLS", "SHOALS"),
    "SHR": ("SHOAR", "SHORE", "SHR"),
    "SHRS": ("SHOARS", "SHORES", "SHRS"),
    "SKWY": ("SKYWAY", "SKWY"),
    "SPG": ("SPG", "SPNG", "SPRING", "SPRNG"),
    "SPGS": ("SPGS", "SPNGS", "SPRINGS", "SPRNGS"),
    "SPUR": ("SPUR", "SPURS"),
    "SQ": ("SQ", "SQR", "SQRE", "SQU", "SQUARE"),
    "SQS": ("SQRS", "SQS", "SQUARES"),
    "STA": ("STA", "STATION", "STATN", "STN"),
    "STRA": ("STRA", "STRAV", "STRAVEN", "STRAVENUE", "STRAVN", "STRVN", "STRVNUE"),
    "STRM": ("STREAM", "STREME", "STRM"),
    "ST": ("STREET", "STRT", "ST", "STR"),
    "STS": ("STREETS", "STS"),
    "SMT": ("SMT", "SUMIT", "SUMITT", "SUMMIT"),
    "TER": ("TER", "TERR", "TERRACE"),
    "TRWY": ("THROUGHWAY", "TRWY"),
    "TRCE": ("TRACE", "TRACES", "TRCE"),
    "TRAK": ("TRACK", "TRACKS", "TRAK", "TRK", "TRKS"),
    "TRFY": ("TRAFFICWAY", "TRFY"),
    "TRL": ("TRAIL", "TRAILS", "TRL", "TRLS"),
    "TRLR": ("TRAILER", "TRLR", "TRLRS"),
    "TUNL": ("TUNEL", "TUNL", "TUNLS", "TUNNEL", "TUNNELS", "TUNNL"),
    "TPKE": ("TRNPK", "TURNPIKE", "TURNPK", "TPKE"),
    "UPAS": ("UNDERPASS", "UPAS"),
    "UN": ("UN", "UNION"),
    "UNS": ("UNIONS", "UNS"),
    "VLY": ("VALLEY", "VALLY", "VLLY", "VLY"),
    "VLYS": ("VALLEYS", "VLYS"),
    "VIA": ("VDCT", "VIA", "VIADCT", "VIADUCT"),
    "VW": ("VIEW", "VW"),
    "VWS": ("VIEWS", "VWS"),
    "VLG": ("VILL", "VILLAG", "VILLAGE", "VILLG", "VILLIAGE", "VLG"),
    "VLGS": ("VILLAGES", "VLGS"),
    "VL": ("VILLE", "VL"),
    "VIS": ("VIS", "VIST", "VISTA", "VST", "VSTA"),
    "WALK": ("WALK", "WALKS"),
    "WALL": ("WALL",),
    "WAY": ("WY", "WAY"),
    "WAYS": ("WAYS",),
    "WL": ("WELL", "WL"),
    "WLS": ("WELLS", "WLS"),
}

#: Any spelling of a street suffix -> its Publication 28 standard abbreviation.
STREET_SUFFIXES: dict[str, str] = {
    spelling: standard
    for standard, spellings in _SUFFIX_SPELLINGS.items()
    for spelling in spellings
}

#: Publication 28, Appendix C1, "primary street suffix name": the word that each standard
#: abbreviation stands for (C1 spells ANNEX "ANEX"; the dictionary word is used here).
SUFFIX_NAMES: dict[str, str] = {
    "ALY": "ALLEY", "ANX": "ANNEX", "ARC": "ARCADE", "AVE": "AVENUE", "BYU": "BAYOU",
    "BCH": "BEACH", "BND": "BEND", "BLF": "BLUFF", "BLFS": "BLUFFS", "BTM": "BOTTOM",
    "BLVD": "BOULEVARD", "BR": "BRANCH", "BRG": "BRIDGE", "BRK": "BROOK", "BRKS": "BROOKS",
    "BG": "BURG", "BGS": "BURGS", "BYP": "BYPASS", "CP": "CAMP", "CYN": "CANYON", "CPE": "CAPE",
    "CSWY": "CAUSEWAY", "CTR": "CENTER", "CTRS": "CENTERS", "CIR": "CIRCLE", "CIRS": "CIRCLES",
    "CLF": "CLIFF", "CLFS": "CLIFFS", "CLB": "CLUB", "CMN": "COMMON", "CMNS": "COMMONS",
    "COR": "CORNER", "CORS": "CORNERS", "CRSE": "COURSE", "CT": "COURT", "CTS": "COURTS",
    "CV": "COVE", "CVS": "COVES", "CRK": "CREEK", "CRES": "CRESCENT", "CRST": "CREST",
    "XING": "CROSSING", "XRD": "CROSSROAD", "XRDS": "CROSSROADS", "CURV": "CURVE", "DL": "DALE",
    "DM": "DAM", "DV": "DIVIDE", "DR": "DRIVE", "DRS": "DRIVES", "EST": "ESTATE", "ESTS": "ESTATES",
    "EXPY": "EXPRESSWAY", "EXT": "EXTENSION", "EXTS": "EXTENSIONS", "FALL": "FALL", "FLS": "FALLS",
    "FRY": "FERRY", "FLD": "FIELD", "FLDS": "FIELDS", "FLT": "FLAT", "FLTS": "FLATS", "FRD": "FORD",
    "FRDS": "FORDS", "FRST": "FOREST", "FRG": "FORGE", "FRGS": "FORGES", "FRK": "FORK",
    "FRKS": "FORKS", "FT": "FORT", "FWY": "FREEWAY", "GDN": "GARDEN", "GDNS": "GARDENS",
    "GTWY": "GATEWAY", "GLN": "GLEN", "GLNS": "GLENS", "GRN": "GREEN", "GRNS": "GREENS",
    "GRV": "GROVE", "GRVS": "GROVES", "HBR": "HARBOR", "HBRS": "HARBORS", "HVN": "HAVEN",
    "HTS": "HEIGHTS", "HWY": "HIGHWAY", "HL": "HILL", "HLS": "HILLS", "HOLW": "HOLLOW",
    "INLT": "INLET", "IS": "ISLAND", "ISS": "ISLANDS", "ISLE": "ISLE", "JCT": "JUNCTION",
    "JCTS": "JUNCTIONS", "KY": "KEY", "KYS": "KEYS", "KNL": "KNOLL", "KNLS": "KNOLLS", "LK": "LAKE",
    "LKS": "LAKES", "LAND": "LAND", "LNDG": "LANDING", "LN": "LANE", "LGT": "LIGHT",
    "LGTS": "LIGHTS", "LF": "LOAF", "LCK": "LOCK", "LCKS": "LOCKS", "LDG": "LODGE", "LOOP": "LOOP",
    "MALL": "MALL", "MNR": "MANOR", "MNRS": "MANORS", "MDW": "MEADOW", "MDWS": "MEADOWS",
    "MEWS": "MEWS", "ML": "MILL", "MLS": "MILLS", "MSN": "MISSION", "MTWY": "MOTORWAY",
    "MT": "MOUNT", "MTN": "MOUNTAIN", "MTNS": "MOUNTAINS", "NCK": "NECK", "ORCH": "ORCHARD",
    "OVAL": "OVAL", "OPAS": "OVERPASS", "PARK": "PARK", "PKWY": "PARKWAY", "PASS": "PASS",
    "PSGE": "PASSAGE", "PATH": "PATH", "PIKE": "PIKE", "PNE": "PINE", "PNES": "PINES",
    "PL": "PLACE", "PLN": "PLAIN", "PLNS": "PLAINS", "PLZ": "PLAZA", "PT": "POINT", "PTS": "POINTS",
    "PRT": "PORT", "PRTS": "PORTS", "PR": "PRAIRIE", "RADL": "RADIAL", "RAMP": "RAMP",
    "RNCH": "RANCH", "RPD": "RAPID", "RPDS": "RAPIDS", "RST": "REST", "RDG": "RIDGE",
    "RDGS": "RIDGES", "RIV": "RIVER", "RD": "ROAD", "RDS": "ROADS", "RTE": "ROUTE", "ROW": "ROW",
    "RUE": "RUE", "RUN": "RUN", "SHL": "SHOAL", "SHLS": "SHOALS", "SHR": "SHORE", "SHRS": "SHORES",
    "SKWY": "SKYWAY", "SPG": "SPRING", "SPGS": "SPRINGS", "SPUR": "SPUR", "SQ": "SQUARE",
    "SQS": "SQUARES", "STA": "STATION", "STRA": "STRAVENUE", "STRM": "STREAM", "ST": "STREET",
    "STS": "STREETS", "SMT": "SUMMIT", "TER": "TERRACE", "TRWY": "THROUGHWAY", "TRCE": "TRACE",
    "TRAK": "TRACK", "TRFY": "TRAFFICWAY", "TRL": "TRAIL", "TRLR": "TRAILER", "TUNL": "TUNNEL",
    "TPKE": "TURNPIKE", "UPAS": "UNDERPASS", "UN": "UNION", "UNS": "UNIONS", "VLY": "VALLEY",
    "VLYS": "VALLEYS", "VIA": "VIADUCT", "VW": "VIEW", "VWS": "VIEWS", "VLG": "VILLAGE",
    "VLGS": "VILLAGES", "VL": "VILLE", "VIS": "VISTA", "WALK": "WALK", "WALL": "WALL", "WAY": "WAY",
    "WAYS": "WAYS", "WL": "WELL", "WLS": "WELLS",
}

#: Spellings in C1 that are words of their own (plurals, other words), not abbreviations:
#: in a street name they are kept as typed ("ROSA PARKS", "PONY EXPRESS").
_SUFFIX_SPELLING_WORDS: frozenset[str] = frozenset({
    "ALLEE", "ALLY", "BOT", "CENT", "CENTRE", "DIV", "EXPRESS", "FORESTS", "HOLLOWS", "ISLES",
    "LOOPS", "PARKS", "PARKWAYS", "PATHS", "PIKES", "RAD", "RANCHES", "SPURS", "TRACES", "TRACKS",
    "TRAILS", "TUNNELS", "WALKS",
})

#: Abbreviations that mean something else inside a name ("ST JOHNS" is Saint, "DR MARTIN
#: LUTHER KING" is Doctor, "VIA VERDE" is Spanish): the name keeps the abbreviation, and
#: the suffix's own words fold to it ("AVON STREET EXT" == "AVON ST EXT").
_NAME_KEEPS_ABBREVIATION: frozenset[str] = frozenset({"ST", "DR", "VIA"})

#: Abbreviations a name keeps as typed because they are something else too: "KY 80" and
#: "PR 2" are state routes, "UN" the United Nations, "ML" Martin Luther, "IS" a word.
#: (MT, CT and WY, state codes too, are far more often Mount, Court and Way in a street.)
_NAME_AS_TYPED: frozenset[str] = frozenset({"KY", "PR", "UN", "ML", "IS"})

#: A street *name* word that is also a suffix spelling -> its one spelling inside a name.
#: Abbreviations are spelled out ("MT VERNON" -> "MOUNT VERNON", "AVEN OF THE STARS" ->
#: "AVENUE OF THE STARS"); words and the ambiguous abbreviations above are not in the
#: table, so they stay as typed.
NAME_SPELLINGS: dict[str, str] = {}

#: Directionals (pre or post), spelled out or abbreviated -> USPS abbreviation.
DIRECTIONALS: dict[str, str] = {
    "N": "N", "NORTH": "N",
    "S": "S", "SOUTH": "S",
    "E": "E", "EAST": "E",
    "W": "W", "WEST": "W",
    "NE": "NE", "NORTHEAST": "NE",
    "NW": "NW", "NORTHWEST": "NW",
    "SE": "SE", "SOUTHEAST": "SE",
    "SW": "SW", "SOUTHWEST": "SW",
}

#: Every two-letter code USPS delivers to: the 50 states, DC, the territories,
#: the freely-associated states and the Armed Forces "states".
STATE_CODES: frozenset[str] = frozenset({
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "FL", "GA",
    "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD",
    "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ",
    "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC",
    "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY",
    "DC",
    "AS", "GU", "MP", "PR", "VI", "UM",
    "FM", "MH", "PW",
    "AA", "AE", "AP",
})

#: Full names (and the traditional abbreviations still seen in old lead lists)
#: -> two-letter code. Keys are already upper-cased, punctuation-free and
#: single-spaced, i.e. in the form normalize_state() looks them up in.
STATE_NAMES: dict[str, str] = {
    "ALABAMA": "AL", "ALASKA": "AK", "ARIZONA": "AZ", "ARKANSAS": "AR",
    "CALIFORNIA": "CA", "COLORADO": "CO", "CONNECTICUT": "CT", "DELAWARE": "DE",
    "FLORIDA": "FL", "GEORGIA": "GA", "HAWAII": "HI", "IDAHO": "ID",
    "ILLINOIS": "IL", "INDIANA": "IN", "IOWA": "IA", "KANSAS": "KS",
    "KENTUCKY": "KY", "LOUISIANA": "LA", "MAINE": "ME", "MARYLAND": "MD",
    "MASSACHUSETTS": "MA", "MICHIGAN": "MI", "MINNESOTA": "MN", "MISSISSIPPI": "MS",
    "MISSOURI": "MO", "MONTANA": "MT", "NEBRASKA": "NE", "NEVADA": "NV",
    "NEW HAMPSHIRE": "NH", "NEW JERSEY": "NJ", "NEW MEXICO": "NM", "NEW YORK": "NY",
    "NORTH CAROLINA": "NC", "NORTH DAKOTA": "ND", "OHIO": "OH", "OKLAHOMA": "OK",
    "OREGON": "OR", "PENNSYLVANIA": "PA", "RHODE ISLAND": "RI", "SOUTH CAROLINA": "SC",
    "SOUTH DAKOTA": "SD", "TENNESSEE": "TN", "TEXAS": "TX", "UTAH": "UT",
    "VERMONT": "VT", "VIRGINIA": "VA", "WASHINGTON": "WA", "WEST VIRGINIA": "WV",
    "WISCONSIN": "WI", "WYOMING": "WY",
    "DISTRICT OF COLUMBIA": "DC", "WASHINGTON DC": "DC", "WASHINGTON D C": "DC",
    "AMERICAN SAMOA": "AS", "GUAM": "GU", "NORTHERN MARIANA ISLANDS": "MP",
    "NORTHERN MARIANAS": "MP", "PUERTO RICO": "PR", "VIRGIN ISLANDS": "VI",
    "US VIRGIN ISLANDS": "VI", "U S VIRGIN ISLANDS": "VI",
    "UNITED STATES VIRGIN ISLANDS": "VI",
    "UNITED STATES MINOR OUTLYING ISLANDS": "UM",
    "FEDERATED STATES OF MICRONESIA": "FM", "MICRONESIA": "FM",
    "MARSHALL ISLANDS": "MH", "PALAU": "PW",
    "ARMED FORCES AMERICAS": "AA",
    "ARMED FORCES EUROPE": "AE", "ARMED FORCES AFRICA": "AE",
    "ARMED FORCES CANADA": "AE", "ARMED FORCES MIDDLE EAST": "AE",
    "ARMED FORCES PACIFIC": "AP",
    # Traditional (pre-1963 / AP style) abbreviations.
    "ALA": "AL", "ARIZ": "AZ", "ARK": "AR", "CALIF": "CA", "CAL": "CA",
    "COLO": "CO", "CONN": "CT", "DEL": "DE", "FLA": "FL", "ILL": "IL",
    "IND": "IN", "KAN": "KS", "KANS": "KS", "MASS": "MA", "MICH": "MI",
    "MINN": "MN", "MISS": "MS", "MONT": "MT", "NEB": "NE", "NEBR": "NE",
    "NEV": "NV", "OKLA": "OK", "ORE": "OR", "OREG": "OR", "PENN": "PA",
    "PENNA": "PA", "TENN": "TN", "TEX": "TX", "WASH": "WA", "WIS": "WI",
    "WISC": "WI", "WYO": "WY", "W VA": "WV",
}


#: C1 files these plural abbreviations under the singular; inside a name they stand for the plural.
_PLURAL_ABBREVIATIONS: dict[str, str] = {
    "HOLWS": "HOLLOWS", "PKWYS": "PARKWAYS", "RNCHS": "RANCHES", "TRKS": "TRACKS", "TRLS": "TRAILS",
    "TUNLS": "TUNNELS",
}


def _name_spellings() -> dict[str, str]:
    table: dict[str, str] = {}
    words = _SUFFIX_SPELLING_WORDS | set(SUFFIX_NAMES.values())
    for standard, spellings in _SUFFIX_SPELLINGS.items():
        for spelling in spellings:
            if standard in _NAME_KEEPS_ABBREVIATION:
                table[spelling] = standard
            elif spelling in words or spelling in _NAME_AS_TYPED:
                continue
            else:
                table[spelling] = _PLURAL_ABBREVIATIONS.get(spelling, SUFFIX_NAMES[standard])
    return table


NAME_SPELLINGS.update(_name_spellings())

#: Street types that, after a lone directional, make the directional the street's name:
#: "123 N ST" is the lettered N Street and "123 NORTH ST" is North Street, kept apart.
#: After any other suffix word the directional is a pre-directional and the word the name
#: ("1520 N WELLS" == "1520 NORTH WELLS").
THOROUGHFARE_TYPES: frozenset[str] = frozenset({
    "ALY", "AVE", "BLVD", "BYP", "CIR", "CT", "CV", "DR", "EXPY", "FWY", "HWY", "LN", "LOOP",
    "PIKE", "PKWY", "PL", "PLZ", "RD", "RTE", "SQ", "ST", "TER", "TPKE", "TRL", "WAY", "XING",
})

#: Types that take a route number ("N HWY 71", "US HWY 16", "STATE RTE 21").
ROUTE_TYPES: frozenset[str] = frozenset({"HWY", "RTE", "FWY", "EXPY", "TPKE", "BYP", "PIKE", "LOOP"})
