"""Word lists and visual signatures of a second synthetic shop, a grocery (data only, no logic).

The toy store (``vocab``) is the default domain; this shop shares none of its category words, brands
or shop phrases, so a model tuned on toys meets new nouns, new features, new uses and new category
names here (the transfer experiment of ``mlaga_fast.demo.transfer``). Looks reuse the renderer's
shapes and textures in combinations of their own.
"""
from __future__ import annotations

from mlaga_fast.data.vocab import Category, Look, Shop

CATEGORIES: tuple[Category, ...] = (
    Category(
        "Fresh Fruit",
        ("gala apples", "ripe bananas", "seedless grapes", "navel oranges", "fresh strawberries",
         "bartlett pears", "blueberry punnet", "honeydew melon"),
        ("a crisp sweet bite", "hand-picked ripeness", "a bright juicy flesh", "orchard-fresh quality",
         "no added wax", "a resealable clamshell", "naturally high vitamin C", "a fragrant aroma"),
        ("lunchbox snacks", "fruit salads", "morning smoothies", "healthy snacking"),
        Look(0.08, "circle", "dots"),
    ),
    Category(
        "Dairy & Eggs",
        ("whole milk", "greek yogurt", "free-range eggs", "salted butter", "cheddar cheese",
         "cottage cheese", "heavy cream", "mozzarella ball"),
        ("pasteurised farm milk", "live active cultures", "a creamy texture", "grade A shells",
         "a rich butterfat content", "aged for twelve months", "a carton with a twist cap", "calcium and protein"),
        ("breakfast omelettes", "baking recipes", "a morning latte", "cheese boards"),
        Look(0.15, "square", "plain"),
    ),
    Category(
        "Bakery",
        ("sourdough loaf", "whole wheat bread", "butter croissants", "bagel pack", "brioche buns",
         "rye bread", "english muffins", "cinnamon rolls"),
        ("a golden crust", "a slow-fermented dough", "a soft crumb", "stone-baked texture",
         "a sprinkle of sesame seeds", "no artificial preservatives", "freshly baked each morning",
         "a flaky layered crumb"),
        ("toast and jam", "sandwiches", "weekend brunch", "burger nights"),
        Look(0.30, "hexagon", "speckle"),
    ),
    Category(
        "Coffee & Tea",
        ("ground coffee", "whole bean coffee", "espresso pods", "green tea bags", "earl grey tea",
         "cold brew concentrate", "instant coffee", "chamomile tea"),
        ("a medium roast", "single-origin arabica beans", "notes of chocolate and caramel",
         "biodegradable tea bags", "a nitrogen-flushed bag", "a smooth low-acid finish",
         "fair trade certification", "hints of citrus"),
        ("the morning brew", "an afternoon pick-me-up", "french press brewing", "a calm evening cup"),
        Look(0.42, "ring", "waves"),
    ),
    Category(
        "Snacks & Chips",
        ("potato chips", "tortilla chips", "salted pretzels", "microwave popcorn", "trail mix",
         "cheese crackers", "rice cakes", "veggie straws"),
        ("a satisfying crunch", "kettle-cooked slices", "a sea salt seasoning", "a zesty lime twist",
         "a shareable party bag", "whole grain corn", "a resealable snack bag", "a light airy texture"),
        ("movie nights", "game day", "road trips", "party platters"),
        Look(0.55, "triangle", "grid"),
    ),
    Category(
        "Pasta & Grains",
        ("spaghetti", "penne pasta", "basmati rice", "rolled oats", "quinoa", "egg noodles",
         "couscous", "arborio rice"),
        ("bronze-cut durum wheat", "a nutty bite", "a ten-minute cook time", "long fluffy grains",
         "a high fibre content", "a stay-fresh pouch", "whole grain goodness", "a creamy risotto texture"),
        ("weeknight dinners", "meal prep", "hearty porridge", "family pasta nights"),
        Look(0.68, "diamond", "checker"),
    ),
    Category(
        "Frozen Foods",
        ("frozen pizza", "frozen peas", "ice cream tub", "fish fingers", "frozen berries",
         "veggie burgers", "frozen dumplings", "waffle fries"),
        ("flash-frozen freshness", "an oven-ready tray", "a stone-baked base", "a crispy breadcrumb coating",
         "a resealable freezer bag", "no thawing needed", "a rich creamy churn", "ready in twelve minutes"),
        ("quick dinners", "freezer stocking", "dessert after dinner", "busy weeknights"),
        Look(0.80, "star", "stripes"),
    ),
    Category(
        "Beverages",
        ("sparkling water", "orange juice", "lemonade", "cola", "iced tea", "coconut water",
         "energy drink", "apple juice"),
        ("fine bubbles", "not-from-concentrate juice", "zero added sugar", "real lemon juice",
         "natural electrolytes", "a recyclable can", "a refreshing citrus finish", "a bottle with a sports cap"),
        ("hot afternoons", "picnics", "post-workout hydration", "mixing mocktails"),
        Look(0.92, "cross", "diagonal"),
    ),
    Category(
        "Condiments & Sauces",
        ("tomato ketchup", "dijon mustard", "mayonnaise", "hot sauce", "soy sauce", "barbecue sauce",
         "pesto jar", "balsamic vinegar"),
        ("ripe tomato flavour", "a squeezable bottle", "a fiery chili kick", "naturally brewed soybeans",
         "a smoky hickory note", "fresh basil and pine nuts", "a tangy finish", "a glass jar"),
        ("burgers and fries", "marinades", "stir-fries", "dipping sauces"),
        Look(0.22, "ring", "checker"),
    ),
    Category(
        "Canned Goods",
        ("canned tomatoes", "chickpeas", "black beans", "tuna in olive oil", "chicken noodle soup",
         "sweet corn", "coconut milk", "baked beans"),
        ("a ring-pull lid", "a low sodium recipe", "a BPA-free lining", "a long shelf life",
         "ready-to-heat convenience", "dolphin-safe sourcing", "no added salt", "whole peeled pieces"),
        ("pantry stocking", "chili and stews", "camping meals", "quick curries"),
        Look(0.48, "square", "diagonal"),
    ),
    Category(
        "Breakfast Cereal",
        ("corn flakes", "granola", "muesli", "frosted wheat squares", "bran flakes", "honey oat clusters",
         "chocolate cereal", "puffed rice"),
        ("crunchy clusters", "whole grain oats", "dried fruit pieces", "a touch of honey",
         "added vitamins and iron", "a family-size box", "toasted almonds", "a crisp that stays crunchy in milk"),
        ("quick breakfasts", "a bowl with cold milk", "yogurt toppings", "busy school mornings"),
        Look(0.62, "circle", "stripes"),
    ),
    Category(
        "Meat & Seafood",
        ("chicken breast", "ground beef", "salmon fillet", "pork chops", "cooked shrimp", "beef steak",
         "turkey mince", "smoked bacon"),
        ("grass-fed beef", "a skin-on fillet", "no added hormones", "a vacuum-sealed pack",
         "a marbled cut", "wild-caught sourcing", "a lean protein", "a dry-cured smoke"),
        ("grilling season", "sunday roasts", "protein-packed meals", "tacos and burgers"),
        Look(0.02, "triangle", "waves"),
    ),
)

BRANDS: tuple[str, ...] = (
    "Harvest Lane", "Green Acre", "Morning Table", "Golden Field", "River Mill", "Blue Barn", "Copper Kettle",
    "Sunrise Farms", "Wild Orchard", "Stonebridge", "Meadowfresh", "Old Granary", "Larkspur Kitchen",
    "Coastline", "Hearth & Hive", "Valley Crest",
)
ADJECTIVES: tuple[str, ...] = (
    "Organic", "Fresh", "Natural", "Homestyle", "Artisan", "Gourmet", "Farmhouse", "Everyday",
    "Signature", "Select", "Traditional", "Hearty", "Simply", "Family", "Reserve", "Wholesome",
)
AGES: tuple[str, ...] = (  # the template's qualifier slot: dietary claims here
    "gluten-free", "non-GMO", "vegan friendly", "keto friendly", "kosher", "low fat", "high protein",
    "no artificial colours",
)
COLOURS: tuple[str, ...] = (  # the template's colour slot: a flavour or style here
    "original", "lightly salted", "unsweetened", "honey", "classic", "extra rich", "mild", "spicy",
    "reduced sugar", "family recipe",
)
PACKS: tuple[str, ...] = ("250 g", "500 g", "1 kg", "pack of 6", "value pack", "2 lb bag")
SHOP_LINES: tuple[str, ...] = (
    "Store in a cool, dry place.", "Refrigerate after opening.", "Sourced from local farms.",
    "Best enjoyed within a week.", "Packed fresh daily.", "Our customers' weekly staple.",
    "Check the pack for allergens.", "Delivered chilled to your door.", "Great value per serving.",
    "Now in recyclable packaging.",
)

SHOP = Shop("grocery", "grocery store", CATEGORIES, BRANDS, ADJECTIVES, AGES, COLOURS, PACKS, SHOP_LINES)
