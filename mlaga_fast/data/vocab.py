"""Word lists and visual signatures of the synthetic toy-store catalogue (data only, no logic).

Each category carries the words that give its products away (product nouns, features, uses) and
a "look" (hue, shape, fill texture) that the image renderer draws. The first eight categories are
the default; up to ``len(CATEGORIES)`` can be asked for. The first eight looks use eight distinct
shapes and eight distinct textures so no two default classes share either; the rest reuse them in
new combinations with hues in between.

A shared vocabulary (brands, generic adjectives, ages, shop phrases) carries no class signal and is
mixed into every text so a text encoder has to find the category words among generic ones.
"""
from __future__ import annotations

from dataclasses import dataclass

SHAPES: tuple[str, ...] = ("square", "cross", "hexagon", "circle", "triangle", "diamond", "ring", "star")
TEXTURES: tuple[str, ...] = ("checker", "grid", "dots", "speckle", "diagonal", "waves", "stripes", "plain")


@dataclass(frozen=True)
class Look:
    hue: float  # base hue in [0, 1)
    shape: str  # one of SHAPES
    texture: str  # one of TEXTURES


@dataclass(frozen=True)
class Category:
    name: str
    nouns: tuple[str, ...]  # product types: the title's head noun
    features: tuple[str, ...]  # "with ..." / "includes ..." phrases
    uses: tuple[str, ...]  # "Perfect for ..." phrases
    look: Look


CATEGORIES: tuple[Category, ...] = (
    Category(
        "Board Games",
        ("strategy board game", "family board game", "cooperative board game", "chess set",
         "checkers set", "trivia board game", "dice game", "backgammon board"),
        ("a folding game board", "wooden player pawns", "a deck of event cards", "two six-sided dice",
         "a score track", "a rule book with variants", "resource tokens", "a spinner"),
        ("family game night", "two to six players", "tabletop strategy fans", "rainy afternoons"),
        Look(0.00, "square", "checker"),
    ),
    Category(
        "Puzzles",
        ("jigsaw puzzle", "1000 piece puzzle", "floor puzzle", "3D puzzle", "brain teaser",
         "wooden puzzle", "panorama jigsaw", "puzzle cube"),
        ("interlocking pieces", "a poster of the finished picture", "a sorting tray",
         "precision-cut pieces", "a glossy finish that reduces glare", "a puzzle mat",
         "pieces that lock tightly", "a landscape photograph"),
        ("quiet evenings", "puzzle lovers", "logic practice", "framing the finished picture"),
        Look(0.60, "cross", "grid"),
    ),
    Category(
        "Building Blocks",
        ("building block set", "brick construction kit", "magnetic tiles", "stacking blocks",
         "interlocking bricks", "construction set", "wooden block set", "architecture kit"),
        ("compatible bricks", "step-by-step building instructions", "a baseplate", "connector pieces",
         "a storage bucket", "wheels and axles", "minifigure builders", "over 500 pieces"),
        ("young engineers", "creative building", "STEM play", "building a city skyline"),
        Look(0.14, "hexagon", "dots"),
    ),
    Category(
        "Stuffed Animals",
        ("plush teddy bear", "stuffed bunny", "plush unicorn", "cuddly puppy plush",
         "stuffed elephant", "plush dinosaur", "soft toy cat", "jumbo plush"),
        ("soft fur", "embroidered eyes", "a satin bow", "huggable stuffing",
         "surface washable fabric", "a plush tail", "floppy ears", "a heart-shaped tag"),
        ("bedtime cuddles", "nursery decor", "a baby shower", "hugging at naptime"),
        Look(0.90, "circle", "speckle"),
    ),
    Category(
        "Remote Control Vehicles",
        ("RC car", "remote control truck", "RC drone", "remote control helicopter", "RC monster truck",
         "stunt car", "RC boat", "off-road buggy"),
        ("a 2.4 GHz transmitter", "a rechargeable battery", "four-wheel drive", "LED headlights",
         "a top speed of 20 mph", "shock absorbers", "a USB charging cable", "a spare propeller"),
        ("backyard racing", "off-road fun", "racing with friends", "outdoor stunts"),
        Look(0.33, "triangle", "diagonal"),
    ),
    Category(
        "Dolls & Accessories",
        ("fashion doll", "baby doll", "dollhouse", "doll clothes set", "doll stroller",
         "princess doll", "doll furniture set", "doll salon"),
        ("three outfit changes", "brushable hair", "a tiny hairbrush", "bendable arms and legs",
         "a pink carry case", "shoes and a purse", "a feeding bottle", "a mini wardrobe"),
        ("pretend play", "dress-up stories", "role play", "little stylists"),
        Look(0.77, "diamond", "waves"),
    ),
    Category(
        "Science Kits",
        ("chemistry set", "microscope kit", "crystal growing kit", "solar system model",
         "robotics kit", "telescope for kids", "volcano experiment kit", "circuit kit"),
        ("safety goggles", "a lab manual with 30 experiments", "test tubes", "a magnifying lens",
         "glow-in-the-dark planets", "a motor and gears", "a battery pack", "prepared slides"),
        ("young scientists", "STEM learning", "science fair projects", "curious minds"),
        Look(0.47, "ring", "stripes"),
    ),
    Category(
        "Arts & Crafts",
        ("crayon set", "watercolor paint set", "craft kit", "modeling clay", "friendship bracelet kit",
         "sketchbook", "sticker book", "bead kit"),
        ("washable markers", "glitter glue", "a paint brush set", "colored pencils", "safety scissors",
         "a pad of drawing paper", "self-hardening clay", "a storage case"),
        ("budding artists", "creative afternoons", "classroom crafts", "making handmade cards"),
        Look(0.07, "star", "plain"),
    ),
    Category(
        "Outdoor Play",
        ("kids trampoline", "swing set", "sandbox", "water blaster", "kite", "bubble machine",
         "play tent", "backyard slide"),
        ("a safety net", "UV-resistant fabric", "a sturdy steel frame", "ground stakes",
         "a sand cover", "a carry bag", "weatherproof materials", "a bubble solution refill"),
        ("backyard play", "summer days", "the park", "active kids"),
        Look(0.25, "circle", "stripes"),
    ),
    Category(
        "Baby & Toddler Toys",
        ("activity cube", "stacking rings", "shape sorter", "baby rattle", "push walker",
         "teething toy", "pull-along toy", "busy board"),
        ("chunky pieces", "BPA-free plastic", "gentle rattling sounds", "bright contrast colors",
         "a sturdy base", "soft silicone", "rounded edges", "a carry handle"),
        ("infants and toddlers", "tummy time", "motor skill development", "first birthdays"),
        Look(0.52, "star", "dots"),
    ),
    Category(
        "Action Figures",
        ("superhero action figure", "robot figure", "dinosaur figure", "knight figure",
         "space ranger figure", "ninja figure", "collectible figure", "figure playset"),
        ("articulated joints", "interchangeable weapons", "a display stand", "battle armor",
         "a light-up chest", "a launcher accessory", "collectible packaging", "poseable hands"),
        ("collectors", "epic battles", "imaginative adventures", "display shelves"),
        Look(0.70, "triangle", "checker"),
    ),
    Category(
        "Musical Toys",
        ("toy xylophone", "kids keyboard", "toy drum set", "ukulele for kids", "toy microphone",
         "musical activity table", "harmonica", "tambourine"),
        ("preset melodies", "a volume control", "drumsticks", "color-coded keys", "nylon strings",
         "a record and playback button", "a song book", "a shoulder strap"),
        ("little musicians", "music lessons", "sing-alongs", "early rhythm practice"),
        Look(0.83, "hexagon", "stripes"),
    ),
    Category(
        "Play Kitchens",
        ("play kitchen", "toy food set", "tea party set", "toy cookware", "pretend grocery store",
         "toy cash register", "wooden cutting food", "toy coffee maker"),
        ("play pots and pans", "realistic cooking sounds", "a pretend oven", "felt vegetables",
         "a shopping basket", "play money", "velcro sliceable fruit", "a tiny kettle"),
        ("pretend cooking", "little chefs", "playing restaurant", "tea parties"),
        Look(0.03, "hexagon", "grid"),
    ),
    Category(
        "Card Games",
        ("card game", "trading card deck", "party card game", "memory matching game",
         "playing card set", "word card game", "collectible card starter deck", "quick draw card game"),
        ("110 illustrated cards", "a sturdy tuck box", "a quick reference card", "foil rare cards",
         "score pads", "wild cards", "a card holder", "expansion packs"),
        ("game night", "travel", "party games", "quick rounds"),
        Look(0.40, "diamond", "checker"),
    ),
    Category(
        "Model Trains",
        ("model train set", "wooden railway", "electric train", "train track pack", "steam locomotive",
         "freight car set", "railway station", "bullet train"),
        ("an oval track", "a working headlight", "a coal tender", "track switches", "a power controller",
         "passenger cars", "a tunnel and bridge", "magnetic couplers"),
        ("railway hobbyists", "holiday displays", "collectors", "building layouts"),
        Look(0.10, "ring", "diagonal"),
    ),
    Category(
        "Costumes & Dress-Up",
        ("dress-up costume", "superhero cape", "princess gown", "pirate costume", "animal costume",
         "wizard robe", "dress-up trunk", "tiara set"),
        ("a matching mask", "a sequin bodice", "an adjustable belt", "a foam sword", "a hooded cape",
         "a magic wand", "machine-washable fabric", "a costume crown"),
        ("Halloween", "themed parties", "dress-up play", "school plays"),
        Look(0.95, "cross", "waves"),
    ),
    Category(
        "Water Toys",
        ("pool float", "squirt gun", "inflatable pool", "splash pad", "bath toy set", "diving rings",
         "water slide", "beach ball"),
        ("puncture-resistant vinyl", "a quick-fill valve", "a repair patch", "sprinkler jets",
         "floating bath animals", "weighted dive sticks", "a foot pump", "a drain plug"),
        ("pool parties", "bath time", "hot summer days", "the beach"),
        Look(0.55, "circle", "waves"),
    ),
    Category(
        "Learning Toys",
        ("learning tablet", "alphabet puzzle", "counting toy", "flash cards", "talking globe",
         "spelling game", "coding robot", "math game"),
        ("phonics lessons", "number cards", "interactive quizzes", "a talking pen",
         "bilingual audio", "lesson levels", "a progress tracker", "a teacher guide"),
        ("preschool learning", "homeschool lessons", "early reading", "kindergarten readiness"),
        Look(0.63, "square", "speckle"),
    ),
    Category(
        "Ride-On Toys",
        ("balance bike", "kids scooter", "ride-on car", "tricycle", "rocking horse", "wagon",
         "electric ride-on", "pedal go-kart"),
        ("adjustable handlebars", "light-up wheels", "a parent push handle", "a 12V battery",
         "a seat belt", "a rear storage bin", "a foot brake", "air-free tires"),
        ("sidewalk rides", "learning balance", "neighborhood adventures", "toddlers on the move"),
        Look(0.18, "triangle", "plain"),
    ),
    Category(
        "Party Supplies",
        ("party balloons", "pinata", "party favor pack", "birthday banner", "confetti poppers",
         "party hats", "goody bags", "cake toppers"),
        ("latex balloons", "a pull-string opening", "ribbon curling", "a happy birthday banner",
         "foil confetti", "elastic chin straps", "assorted mini toys", "matching plates and cups"),
        ("birthday parties", "classroom celebrations", "baby showers", "holiday parties"),
        Look(0.86, "star", "grid"),
    ),
)

MAX_CLASSES = len(CATEGORIES)

# ---- shared vocabulary (no class signal) ------------------------------------------------------
BRANDS: tuple[str, ...] = (
    "Brightwood", "Kettle & Kite", "Pinecrest", "Tumbleleaf", "Hollow Oak", "Sunny Lane", "Marlow",
    "Bluebird Toys", "Little Harbor", "Quillon", "Fernfield", "Maple Row", "Oakhurst", "Zephyr",
    "Cobble Hill", "Northstar Play", "Wrenly", "Tidewater", "Pebble & Pine", "Greyfox",
)
ADJECTIVES: tuple[str, ...] = (
    "Classic", "Deluxe", "Premium", "Colorful", "Durable", "Portable", "Award-Winning", "Ultimate",
    "Mini", "Jumbo", "Eco-Friendly", "Original", "Vintage-Style", "Compact", "Large", "Bright",
    "Sturdy", "Essential", "Limited Edition", "Travel",
)
AGES: tuple[str, ...] = (
    "for ages 3 and up", "for ages 4+", "for kids 5-8", "for ages 6 and up", "for ages 8+",
    "for ages 12 and up", "for toddlers and preschoolers", "for all ages",
)
COLOURS: tuple[str, ...] = (
    "red", "blue", "green", "yellow", "pink", "purple", "orange", "black", "white", "rainbow",
    "teal", "multicolor",
)
PACKS: tuple[str, ...] = ("single pack", "pack of 2", "set of 3", "pack of 4", "family pack", "gift set")
SHOP_LINES: tuple[str, ...] = (
    "Makes a great birthday gift.", "Ships in a gift-ready box.", "Easy to clean and store.",
    "Backed by a one-year warranty.", "Designed and tested for safety.", "Customers love the quality.",
    "A bestseller this season.", "Comes in recyclable packaging.", "Great value for the price.",
    "Loved by kids and parents alike.", "Assembly takes only minutes.", "Fits neatly on a shelf.",
)


@dataclass(frozen=True)
class Shop:
    """One shop's whole vocabulary: its categories and the class-free words mixed into every text. The
    text templates fill ``ages`` and ``colours`` as a qualifier and a variant (an age range and a colour
    for toys; another shop may put a dietary claim and a flavour there)."""
    name: str  # the --shop value
    domain: str  # what the prompts call the catalogue's domain
    categories: tuple[Category, ...]
    brands: tuple[str, ...]
    adjectives: tuple[str, ...]
    ages: tuple[str, ...]
    colours: tuple[str, ...]
    packs: tuple[str, ...]
    shop_lines: tuple[str, ...]


TOYS = Shop("toys", "toy store", CATEGORIES, BRANDS, ADJECTIVES, AGES, COLOURS, PACKS, SHOP_LINES)
