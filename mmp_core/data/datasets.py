"""Dataset specifications: task, labels, splits, metric, raw layout and arrow schema of each dataset."""

from __future__ import annotations

from dataclasses import dataclass

from mmp_core.tasks import PRIMARY_METRIC, TASKS

MMIMDB_GENRES: tuple[str, ...] = (
    "Drama",
    "Comedy",
    "Romance",
    "Thriller",
    "Crime",
    "Action",
    "Adventure",
    "Horror",
    "Documentary",
    "Mystery",
    "Sci-Fi",
    "Fantasy",
    "Family",
    "Biography",
    "War",
    "History",
    "Music",
    "Animation",
    "Musical",
    "Western",
    "Sport",
    "Short",
    "Film-Noir",
)

# IMDb genres that occur in the raw MM-IMDb metadata but are not among the 23 classes (too rare when the
# dataset was built): the reference implementation drops them silently; mmp drops them and counts them.
MMIMDB_DROPPED_GENRES: tuple[str, ...] = ("Adult", "Game-Show", "News", "Reality-TV", "Talk-Show")

# The embedded synthetic dataset: MM-IMDb layout, 8 genres. Which modality carries each one is documented in
# mmp_core/data/generate.py.
EMBEDDED_GENRES: tuple[str, ...] = (
    "Horror",  # image only: dark background
    "Western",  # image only: horizontal stripes
    "Animation",  # image only: a big yellow circle
    "Romance",  # text only
    "Comedy",  # text only
    "Sci-Fi",  # text only
    "Action",  # either modality: red triangles and/or action words
    "Mystery",  # both needed: a checkerboard patch AND secret-words (each also appears alone as a decoy)
)

# UPMC Food-101 classes in sorted order. A raw directory's class_idx.json always wins over this list; it is
# only used to name the labels of reference arrow files imported without class_idx.json.
FOOD101_CLASSES: tuple[str, ...] = tuple(
    sorted(
        [
            "apple_pie",
            "baby_back_ribs",
            "baklava",
            "beef_carpaccio",
            "beef_tartare",
            "beet_salad",
            "beignets",
            "bibimbap",
            "bread_pudding",
            "breakfast_burrito",
            "bruschetta",
            "caesar_salad",
            "cannoli",
            "caprese_salad",
            "carrot_cake",
            "ceviche",
            "cheese_plate",
            "cheesecake",
            "chicken_curry",
            "chicken_quesadilla",
            "chicken_wings",
            "chocolate_cake",
            "chocolate_mousse",
            "churros",
            "clam_chowder",
            "club_sandwich",
            "crab_cakes",
            "creme_brulee",
            "croque_madame",
            "cup_cakes",
            "deviled_eggs",
            "donuts",
            "dumplings",
            "edamame",
            "eggs_benedict",
            "escargots",
            "falafel",
            "filet_mignon",
            "fish_and_chips",
            "foie_gras",
            "french_fries",
            "french_onion_soup",
            "french_toast",
            "fried_calamari",
            "fried_rice",
            "frozen_yogurt",
            "garlic_bread",
            "gnocchi",
            "greek_salad",
            "grilled_cheese_sandwich",
            "grilled_salmon",
            "guacamole",
            "gyoza",
            "hamburger",
            "hot_and_sour_soup",
            "hot_dog",
            "huevos_rancheros",
            "hummus",
            "ice_cream",
            "lasagna",
            "lobster_bisque",
            "lobster_roll_sandwich",
            "macaroni_and_cheese",
            "macarons",
            "miso_soup",
            "mussels",
            "nachos",
            "omelette",
            "onion_rings",
            "oysters",
            "pad_thai",
            "paella",
            "pancakes",
            "panna_cotta",
            "peking_duck",
            "pho",
            "pizza",
            "pork_chop",
            "poutine",
            "prime_rib",
            "pulled_pork_sandwich",
            "ramen",
            "ravioli",
            "red_velvet_cake",
            "risotto",
            "samosa",
            "sashimi",
            "scallops",
            "seaweed_salad",
            "shrimp_and_grits",
            "spaghetti_bolognese",
            "spaghetti_carbonara",
            "spring_rolls",
            "steak",
            "strawberry_shortcake",
            "sushi",
            "tacos",
            "takoyaki",
            "tiramisu",
            "tuna_tartare",
            "waffles",
        ]
    )
)
assert len(FOOD101_CLASSES) == 101


@dataclass(frozen=True)
class DatasetSpec:
    """What mmp needs to know about a dataset.

    Attributes:
        name: registry key; also the prefix of the arrow file names (`{name}_{split}.arrow`).
        task: `multilabel` (multi-hot list label), `multiclass` or `binary` (integer label).
        label_names: class names in label-index order (binary: the two classes).
        splits: split names in train, validation, test order.
        layout: raw layout read by `mmp prepare` (`mmimdb`, `food101`, `hatememes`).
        text_column: arrow column holding the text, a list of strings (`plots` or `text`).
        max_text_len: default text length in tokens (docs/method.md §1).
        ignored_labels: raw label names that are dropped (counted in the manifest) instead of rejected.
    """

    name: str
    task: str
    label_names: tuple[str, ...]
    splits: tuple[str, str, str]
    layout: str
    text_column: str
    max_text_len: int
    ignored_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "binary" and len(self.label_names) != 2:
            raise ValueError("a binary dataset has exactly 2 label names")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"dataset {self.name}: duplicate label names")

    @property
    def primary_metric(self) -> str:
        """The model-selection metric of its task (`f1_macro`, `accuracy`, `auroc`; mmp_core.tasks)."""
        return PRIMARY_METRIC[self.task]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def train_split(self) -> str:
        return self.splits[0]

    @property
    def val_split(self) -> str:
        return self.splits[1]

    @property
    def test_split(self) -> str:
        return self.splits[2]

    def arrow_name(self, split: str) -> str:
        return f"{self.name}_{split}.arrow"

    def with_labels(self, label_names: tuple[str, ...]) -> DatasetSpec:
        """The same spec with other label names (e.g. from a raw directory's class_idx.json)."""
        return DatasetSpec(**{**self.__dict__, "label_names": tuple(label_names)})


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mmimdb",
            task="multilabel",
            label_names=MMIMDB_GENRES,
            splits=("train", "dev", "test"),
            layout="mmimdb",
            text_column="plots",
            max_text_len=1024,
            ignored_labels=MMIMDB_DROPPED_GENRES,
        ),
        DatasetSpec(
            name="food101",
            task="multiclass",
            label_names=FOOD101_CLASSES,
            splits=("train", "val", "test"),
            layout="food101",
            text_column="text",
            max_text_len=512,
        ),
        DatasetSpec(
            name="hatememes",
            task="binary",
            label_names=("not-hateful", "hateful"),
            splits=("train", "dev", "test"),
            layout="hatememes",
            text_column="text",
            max_text_len=128,
        ),
        DatasetSpec(
            name="embedded",
            task="multilabel",
            label_names=EMBEDDED_GENRES,
            splits=("train", "dev", "test"),
            layout="mmimdb",
            text_column="plots",
            max_text_len=40,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}") from None
