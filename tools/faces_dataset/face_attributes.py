"""Numeric encoding of facesjs face objects (one labels.csv row per face).

Every column is a number. Categorical ``*_id`` columns index into the
facesjs feature list recorded in ``meta.json`` (``attributes[col]["categories"]``),
which comes from the installed facesjs (``node generate.mjs --vocab``).
"""

from __future__ import annotations

import re

GENDERS = ["male", "female"]

# Hand classification of facesjs 5.0.3 mouth shapes (see docs/dataset.md).
SMILE_MOUTHS = {"smile", "smile2", "smile3", "smile4", "smile-closed", "mouth2", "mouth3", "mouth7"}
FROWN_MOUTHS = {"angry", "closed"}
TEETH_MOUTHS = {"angry", "mouth", "mouth2", "mouth3", "mouth7", "mouth8", "smile", "smile2", "smile3"}
HATS = {"hat", "hat2", "hat3", "santa-hat"}
HEADBANDS = {"headband", "headband-high"}

# Coarse hair-colour groups for the facesjs palettes (by eye).
HAIR_GROUPS = ["black", "brown", "blond", "red"]
HAIR_GROUP_OF = {
    "#272421": "black", "#0f0902": "black", "#1c1008": "black", "#2c1608": "black",
    "#3d2314": "brown", "#5a3825": "brown",
    "#cc9966": "blond", "#e9c67b": "blond", "#d7bf91": "blond",
    "#b55239": "red",
}


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """'#rrggbb' -> (r, g, b) ints."""
    if not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
        raise ValueError(f"expected a #rrggbb colour, got {color!r}")
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))


def luma(rgb: tuple[int, int, int]) -> float:
    """Rec. 601 luma in [0, 1]."""
    r, g, b = rgb
    return round((0.299 * r + 0.587 * g + 0.114 * b) / 255.0, 4)


def unique(seq):
    """Order-preserving de-duplication."""
    return list(dict.fromkeys(seq))


def palettes(vocab: dict) -> dict:
    """Race list and global skin/hair colour lists (lower-case hex) from the facesjs palettes."""
    colors = vocab["colors"]
    races = list(colors)
    return {
        "races": races,
        "skin_colors": unique(c.lower() for r in races for c in colors[r]["skin"]),
        "hair_colors": unique(c.lower() for r in races for c in colors[r]["hair"]),
    }


def _shave(value: str) -> float:
    m = re.fullmatch(r"rgba\(0,0,0,([0-9.]+)\)", value.replace(" ", ""))
    return float(m.group(1)) if m else 0.0


def _cat(vocab: dict, feature: str, value: str) -> int:
    return vocab["svgsIndex"][feature].index(value)


def _race_of_skin(colors: dict, skin: str) -> tuple[int, int]:
    """(race id, tone index within that race's palette) for a skin colour."""
    for race_id, race in enumerate(colors):
        tones = [c.lower() for c in colors[race]["skin"]]
        if skin in tones:
            return race_id, tones.index(skin)
    raise ValueError(f"skin colour {skin} is not in any facesjs palette")


def encode(record: dict, vocab: dict) -> dict:
    """Flatten one generate.mjs record into a dict of numeric columns."""
    f = record["face"]
    pal = palettes(vocab)
    skin_hex, hair_hex = f["body"]["color"].lower(), f["hair"]["color"].lower()
    skin, hair = hex_to_rgb(skin_hex), hex_to_rgb(hair_hex)
    bg, jersey = hex_to_rgb(record["bg"]), hex_to_rgb(f["teamColors"][0])
    race, tone = _race_of_skin(vocab["colors"], skin_hex)
    mouth, acc, glasses = f["mouth"]["id"], f["accessories"]["id"], f["glasses"]["id"]
    return {
        "index": record["index"],
        "gender": GENDERS.index(f["gender"]),
        "race": race,
        "skin_tone": tone,
        "skin_color_id": pal["skin_colors"].index(skin_hex),
        "skin_r": skin[0], "skin_g": skin[1], "skin_b": skin[2],
        "skin_luma": luma(skin),
        "fatness": f["fatness"],
        "body_size": f["body"]["size"],
        "head_id": _cat(vocab, "head", f["head"]["id"]),
        "head_shave": _shave(f["head"]["shave"]),
        "hair_id": _cat(vocab, "hair", f["hair"]["id"]),
        "hair_flip": int(f["hair"]["flip"]),
        "hair_hidden": int(record["hairHidden"]),
        "bald": int(f["hair"]["id"] == "bald"),
        "long_hair": int(f["hairBg"]["id"] != "none"),
        "hair_bg_id": _cat(vocab, "hairBg", f["hairBg"]["id"]),
        "hair_color_id": pal["hair_colors"].index(hair_hex),
        "hair_color_group": HAIR_GROUPS.index(HAIR_GROUP_OF[hair_hex]),
        "hair_r": hair[0], "hair_g": hair[1], "hair_b": hair[2],
        "hair_luma": luma(hair),
        "eye_id": _cat(vocab, "eye", f["eye"]["id"]),
        "eye_angle": f["eye"]["angle"],
        "eyebrow_id": _cat(vocab, "eyebrow", f["eyebrow"]["id"]),
        "eyebrow_angle": f["eyebrow"]["angle"],
        "eye_line_id": _cat(vocab, "eyeLine", f["eyeLine"]["id"]),
        "smile_line_id": _cat(vocab, "smileLine", f["smileLine"]["id"]),
        "smile_line_size": f["smileLine"]["size"],
        "misc_line_id": _cat(vocab, "miscLine", f["miscLine"]["id"]),
        "mouth_id": _cat(vocab, "mouth", mouth),
        "mouth_flip": int(f["mouth"]["flip"]),
        "smile": int(mouth in SMILE_MOUTHS),
        "expression": 1 if mouth in SMILE_MOUTHS else (-1 if mouth in FROWN_MOUTHS else 0),
        "teeth": int(mouth in TEETH_MOUTHS),
        "nose_id": _cat(vocab, "nose", f["nose"]["id"]),
        "nose_flip": int(f["nose"]["flip"]),
        "nose_size": f["nose"]["size"],
        "ear_id": _cat(vocab, "ear", f["ear"]["id"]),
        "ear_size": f["ear"]["size"],
        "facial_hair": int(f["facialHair"]["id"] != "none"),
        "facial_hair_id": _cat(vocab, "facialHair", f["facialHair"]["id"]),
        "glasses": int(glasses.startswith("glasses")),
        "face_mask": int(glasses == "facemask"),
        "glasses_id": _cat(vocab, "glasses", glasses),
        "accessories": int(acc != "none"),
        "accessories_id": _cat(vocab, "accessories", acc),
        "hat": int(acc in HATS),
        "headband": int(acc in HEADBANDS),
        "eye_black": int(acc == "eye-black"),
        "jersey_id": _cat(vocab, "jersey", f["jersey"]["id"]),
        "jersey_r": jersey[0], "jersey_g": jersey[1], "jersey_b": jersey[2],
        "bg_r": bg[0], "bg_g": bg[1], "bg_b": bg[2],
    }


def _binary(desc: str) -> dict:
    return {"type": "binary", "description": desc}


def _category(desc: str, categories: list) -> dict:
    return {"type": "category", "description": desc, "categories": list(categories)}


def _number(desc: str, lo=None, hi=None) -> dict:
    d = {"type": "number", "description": desc}
    if lo is not None:
        d["range"] = [lo, hi]
    return d


def dictionary(vocab: dict) -> dict:
    """Column name -> {type, description, categories|range} for meta.json."""
    pal, sv = palettes(vocab), vocab["svgsIndex"]
    byte = (0, 255)
    d = {
        "index": _number("face index; the image is images/{index:06d}.png"),
        "gender": _category("facesjs gender", GENDERS),
        "race": _category("facesjs race (sets skin and hair palettes)", pal["races"]),
        "skin_tone": _number("index of the skin colour within the race's palette (0 = first)"),
        "skin_color_id": _category("skin colour (global list)", pal["skin_colors"]),
        "skin_luma": _number("Rec.601 luma of the skin colour", 0, 1),
        "fatness": _number("face width (facesjs fatness)", 0, 1),
        "body_size": _number("shoulder width scale", 0.8, 1.05),
        "head_id": _category("head shape", sv["head"]),
        "head_shave": _number("opacity of the shaved-head shadow (0 = none)", 0, 0.2),
        "hair_id": _category("hair style as drawn (hats replace some styles)", sv["hair"]),
        "hair_flip": _binary("hair mirrored"),
        "hair_hidden": _binary("hair not drawn (style hidden under a hat)"),
        "bald": _binary("hair style 'bald'"),
        "long_hair": _binary("long hair behind the head (hairBg != none)"),
        "hair_bg_id": _category("hair-behind-head style", sv["hairBg"]),
        "hair_color_id": _category("hair colour (global list)", pal["hair_colors"]),
        "hair_color_group": _category("coarse hair colour", HAIR_GROUPS),
        "hair_luma": _number("Rec.601 luma of the hair colour", 0, 1),
        "eye_id": _category("eye shape", sv["eye"]),
        "eye_angle": _number("eye tilt in degrees", -10, 15),
        "eyebrow_id": _category("eyebrow shape", sv["eyebrow"]),
        "eyebrow_angle": _number("eyebrow tilt in degrees", -15, 20),
        "eye_line_id": _category("lines under the eyes", sv["eyeLine"]),
        "smile_line_id": _category("nasolabial lines", sv["smileLine"]),
        "smile_line_size": _number("nasolabial line scale", 0.25, 2.25),
        "misc_line_id": _category("freckles / blush / forehead or chin lines", sv["miscLine"]),
        "mouth_id": _category("mouth shape", sv["mouth"]),
        "mouth_flip": _binary("mouth mirrored"),
        "smile": _binary("smiling mouth: " + ", ".join(sorted(SMILE_MOUTHS))),
        "expression": _number("-1 frown (" + ", ".join(sorted(FROWN_MOUTHS)) + "), 0 neutral, 1 smile", -1, 1),
        "teeth": _binary("teeth visible: " + ", ".join(sorted(TEETH_MOUTHS))),
        "nose_id": _category("nose shape", sv["nose"]),
        "nose_flip": _binary("nose mirrored"),
        "nose_size": _number("nose scale", 0.5, 1.25),
        "ear_id": _category("ear shape", sv["ear"]),
        "ear_size": _number("ear scale", 0.5, 1.5),
        "facial_hair": _binary("any beard / moustache / sideburns"),
        "facial_hair_id": _category("facial hair style", sv["facialHair"]),
        "glasses": _binary("glasses (glasses* ids)"),
        "face_mask": _binary("sports face mask (glasses id 'facemask')"),
        "glasses_id": _category("glasses / face mask style", sv["glasses"]),
        "accessories": _binary("any accessory (hat, headband, eye black)"),
        "accessories_id": _category("accessory", sv["accessories"]),
        "hat": _binary("hat: " + ", ".join(sorted(HATS))),
        "headband": _binary("headband: " + ", ".join(sorted(HEADBANDS))),
        "eye_black": _binary("eye black (sports paint under the eyes)"),
        "jersey_id": _category("shirt style", sv["jersey"]),
    }
    for prefix, what in [("skin", "skin"), ("hair", "hair"), ("jersey", "shirt primary"), ("bg", "background")]:
        for ch, name in zip("rgb", ("red", "green", "blue")):
            d[f"{prefix}_{ch}"] = _number(f"{what} colour, {name} channel", *byte)
    return d
