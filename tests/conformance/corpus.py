"""The conformance corpus: benchmark rows with the real columns (as the hub's parquet
files have them, nulls and the string "nan" included) and, per row, the model outputs
to score: the clean answer, chatty and odd formats, and the cases where lmms-eval would
guess (random letter, GPT judge). Review it like code: each list says what it covers.

Images are not part of a row here (no prompt or score reads them); the tests add a tiny
picture where our ``sample`` needs one.
"""

from __future__ import annotations

# ---------------------------------------------------------------- output formats


def mc_outputs(letter: str, text: str, other: str, other_text: str) -> list[str]:
    """Ways a model answers a multiple-choice question whose right option is ``letter``
    (``text``), with ``other`` (``other_text``) a wrong one: 34 formats."""
    low = letter.lower()
    return [
        letter, f"{letter}.", f"({letter})", f"{letter})", f"{letter}:", f"[{letter}]", f"**{letter}**",
        f"{letter}. {text}", f"({letter}) {text}", f"{letter}) {text}", f"{letter}: {text}", f" {letter} ",
        f"Answer: {letter}", f"The answer is {letter}.", f"The answer is ({letter}).",
        f"The correct answer is {letter}. {text}", f"The best answer is {letter}", f"Option {letter}",
        f"I think the answer is {letter} because the video shows it clearly",
        text, f"{text}.", f"It is {text}, I believe, judging from what is shown here.",
        low, f"{low}. {text}", f"{letter}\n\nBecause {text}.", f"{letter} or {other}", f"{other}, not {letter}",
        f"({other}) {other_text}", f"Not {other_text} but {text}", "Neither of them.", "",
        "I cannot tell from the video what is happening here at all",
        f"A person is {text}", f"{letter}{other}",
    ]


YES_NO = [  # 27 readings of a yes/no answer
    "Yes", "yes", "YES", "Yes.", "yes!", " yes ", "Y", "y.", "Yes, there is a dog in the image.",
    "No", "no", "NO.", "No.", "n", "No, there is not.", "Nope", "Yeah", "The answer is yes.", "I think no",
    "There is a dog.", "", "not sure", "noo", "Yes and no", "nothing", "yes\nno", "No. Yes.",
]


def short_outputs(gold: str) -> list[str]:
    """A short answer ``gold`` as models write it (20 forms) and a few wrong ones."""
    return [
        gold, gold.capitalize(), gold.upper(), f"{gold}.", f"{gold} .", f" {gold} ", f"The {gold}", f"a {gold}",
        f"{gold}!", f"It is {gold}.", f"'{gold}'", f'"{gold}"', f"{gold}, I think", f"{gold}\n", f"{gold}?",
        gold.replace(" ", "-"), f"{gold}s", f"({gold})", f"{gold}..." + "." * 40, f"the answer is {gold}",
        "yes", "two", "unanswerable", "", f"İ{gold}", f"{gold}İ.", f"{gold}\x00", f"{gold}\x00.",
    ]


# ---------------------------------------------------------------- images


MME_ROWS = [  # two questions per image (question_id), perception and cognition categories
    {"question_id": "code_reasoning/0020.png", "question": "Is a c++ code shown in the picture? Please answer yes or no.",
     "answer": "Yes", "category": "code_reasoning"},
    {"question_id": "code_reasoning/0020.png", "question": "Is a python code shown in the picture? Please answer yes or no.",
     "answer": "No", "category": "code_reasoning"},
    {"question_id": "000000006040.jpg", "question": "Is there a train in this image? Please answer yes or no.",
     "answer": "Yes", "category": "existence"},
    {"question_id": "000000006040.jpg", "question": "Is there a bed in this image? Please answer yes or no.",
     "answer": "No", "category": "existence"},
    {"question_id": "000000051008.jpg", "question": "Are there two dogs in this image?  Please answer yes or no.",
     "answer": "Yes", "category": "count"},
    {"question_id": "000000051008.jpg", "question": "Are there three dogs in this image? Please answer yes or no.",
     "answer": "No", "category": "count"},
    {"question_id": "0001.jpg", "question": " Is the word in the logo \"high time coffee shop\"? Please answer yes or no.",
     "answer": "Yes", "category": "OCR"},
    {"question_id": "0001.jpg", "question": "Is the word in the logo \"high tite cofeee shop\"?",
     "answer": "No", "category": "OCR"},
    {"question_id": "10002.jpg", "question": "Does this artwork exist in the form of painting? Please answer yes or no.",
     "answer": "Yes", "category": "artwork"},
    {"question_id": "10002.jpg", "question": "Does this artwork exist in the form of glassware? Please answer yes or no.",
     "answer": "No", "category": "artwork"},
    {"question_id": "0006.png", "question": "Is the answer to the arithmetic question in the image 65? Please answer yes or no.",
     "answer": "Yes", "category": "numerical_calculation"},
    {"question_id": "0006.png", "question": "Is the answer to the arithmetic question in the image 56? Please answer yes or no.",
     "answer": "No", "category": "numerical_calculation"},
    {"question_id": "0003.png", "question": "Is it appropriate to translate the Chinese in the image into English 'classic taste' in the picture? Please answer yes or no.",
     "answer": "Yes.", "category": "text_translation"},
    {"question_id": "0003.png", "question": "Is it appropriate to translate the Chinese in the image into English 'classic food' in the picture? Please answer yes or no.",
     "answer": "No", "category": "text_translation"},
    # a category outside lmms-eval's lists: it adds to cognition (everything not perception)
    {"question_id": "x/0001.png", "question": "Is this a map of France? Please answer yes or no.",
     "answer": "Yes", "category": "map_reading"},
    {"question_id": "x/0001.png", "question": "Is this a map of Spain? Please answer yes or no.",
     "answer": "No", "category": "map_reading"},
]

POPE_ROWS = [
    {"id": str(i), "question_id": str(i + 1), "question": q, "answer": a, "image_source": f"COCO_val2014_{i:012d}",
     "category": c}
    for i, (q, a, c) in enumerate([
        ("Is there a snowboard in the image?", "yes", "adversarial"),
        ("Is there a person in the image?", "no", "adversarial"),
        ("Is there a car in the image? ", "yes", "adversarial"),
        ("Is there a dining table in the image?", "no", "popular"),
        ("Is there a cup in the image?", "yes", "popular"),
        ("Is there a chair in the image?", "no", "popular"),
        ("Is there a bird in the image?", "yes", "random"),
        ("Is there a toilet in the image?", "no", "random"),
        ("Is there a kite in the image?", "Yes", "random"),
    ])
]

GQA_ROWS = [
    {"id": "201307251", "imageId": "n7768", "question": "Is it overcast?", "answer": "no",
     "fullAnswer": "No, it is clear.", "isBalanced": True},
    {"id": "201640614", "imageId": "n7768", "question": "Who is wearing a dress?", "answer": "woman",
     "fullAnswer": "The woman is wearing a dress.", "isBalanced": True},
    {"id": "202225914", "imageId": "n3421", "question": "Which side is the car on?", "answer": "left",
     "fullAnswer": "The car is on the left of the image.", "isBalanced": True},
    {"id": "20385015", "imageId": "n3421", "question": "What is the man wearing?", "answer": "t-shirt",
     "fullAnswer": "The man is wearing a t-shirt.", "isBalanced": True},
    {"id": "20968403", "imageId": "n9012", "question": "What color is the cat?", "answer": "black and white",
     "fullAnswer": "The cat is black and white.", "isBalanced": True},
]

MMBENCH_ROWS = [  # circular rotations share index % 1,000,000; nulls, "nan", "" and "None" as the hub has them
    {"index": 241, "question": "Which animal is shown?", "hint": "The picture was taken at a farm.",
     "A": "cat", "B": "dog", "C": "cow", "D": None, "answer": "B", "category": "image_scene",
     "L2-category": "coarse_perception", "source": "MMBench", "split": "dev", "comment": None},
    {"index": 1000241, "question": "Which animal is shown?", "hint": "The picture was taken at a farm.",
     "A": "dog", "B": "cow", "C": "cat", "D": None, "answer": "A", "category": "image_scene",
     "L2-category": "coarse_perception", "source": "MMBench", "split": "dev", "comment": None},
    {"index": 2000241, "question": "Which animal is shown?", "hint": "The picture was taken at a farm.",
     "A": "cow", "B": "cat", "C": "dog", "D": None, "answer": "C", "category": "image_scene",
     "L2-category": "coarse_perception", "source": "MMBench", "split": "dev", "comment": None},
    {"index": 57, "question": "What is the weather like?", "hint": "nan", "A": "sunny", "B": "rainy",
     "C": "nan", "D": "nan", "answer": "A", "category": "attribute_recognition",
     "L2-category": "finegrained_perception (instance-level)", "source": "MMBench", "split": "dev",
     "comment": "nan"},
    {"index": 1000057, "question": "What is the weather like?", "hint": None, "A": "rainy", "B": "sunny",
     "C": "nan", "D": "nan", "answer": "B", "category": "attribute_recognition",
     "L2-category": "finegrained_perception (instance-level)", "source": "MMBench", "split": "dev",
     "comment": "nan"},
    {"index": 90, "question": "How many of the balls are red?", "hint": "", "A": "None", "B": "Some",
     "C": "All", "D": "Half of them", "answer": "A", "category": "object_localization",
     "L2-category": "finegrained_perception (instance-level)", "source": "MMBench", "split": "dev",
     "comment": None},
    {"index": 1000090, "question": "How many of the balls are red?", "hint": "", "A": "Some", "B": "All",
     "C": "Half of them", "D": "None", "answer": "D", "category": "object_localization",
     "L2-category": "finegrained_perception (instance-level)", "source": "MMBench", "split": "dev",
     "comment": None},
    {"index": 12, "question": "Which of these is a mammal?\n", "hint": "Look at the picture. \nThink.",
     "A": "shark", "B": "whale", "C": "trout", "D": "eel", "E": "salmon", "answer": "B",
     "category": "nature_relation", "L2-category": "relation_reasoning", "source": "MMBench", "split": "dev",
     "comment": None},
]

SCIENCEQA_ROWS = [
    {"question": "Which of these states is farthest north?", "choices": ["West Virginia", "Louisiana", "Arizona",
     "Oklahoma"], "answer": 0, "hint": "", "task": "closed choice", "grade": "grade2", "subject": "social science",
     "topic": "geography", "category": "Geography", "skill": "Read a map: cardinal directions", "lecture": "",
     "solution": ""},
    {"question": "Which animal's feet are also adapted for digging?", "choices": ["aardvark", "goat"], "answer": 0,
     "hint": "Moles are adapted for digging.", "task": "closed choice", "grade": "grade3",
     "subject": "natural science", "topic": "biology", "category": "Adaptations", "skill": "Animal adaptations",
     "lecture": "", "solution": ""},
    {"question": "What is the capital of Utah?", "choices": ["Provo", "Salt Lake City", "Denver", "Ogden",
     "Boise"], "answer": 1, "hint": "", "task": "closed choice", "grade": "grade4", "subject": "social science",
     "topic": "geography", "category": "State capitals", "skill": "Identify state capitals", "lecture": "",
     "solution": ""},
]

TEXTVQA_ROWS = [
    {"image_id": "003a8ae2ef43b901", "question_id": 34602, "question": "what is the brand of this camera?",
     "answers": ["nous les gosses", "dakota", "clos culombu", "dakota digital", "dakota", "dakota",
                 "dakota digital", "dakota digital", "dakota", "dakota"], "ocr_tokens": ["DAKOTA"]},
    {"image_id": "0054c91397f2fe05", "question_id": 34603, "question": "What does the small white text spell?",
     "answers": ["copenhagen", "copenhagen", "copenhagen", "copenhagen", "copenhagen", "thursday",
                 "copenhagen", "copenhagen", "copenhagen", "copenhagen"], "ocr_tokens": []},
    {"image_id": "005635e119b9f32f", "question_id": 34604, "question": "how many liters?",
     "answers": ["2", "2 liters", "two", "2", "2l", "2", "two liters", "2", "2", "2.0"], "ocr_tokens": []},
    {"image_id": "00685bc495504d61", "question_id": 34605, "question": "WHAT is the time?",
     "answers": ["10:10", "10:10", "ten past ten", "10:10", "10.10", "10:10", "10;10", "10:10", "10 10",
                 "10:10"], "ocr_tokens": []},
]

OKVQA_ROWS = [
    {"question_id": "2971475", "question": "What sport can you use this for?",
     "answers": ["race", "race", "race", "race", "race", "race", "motocross", "motocross", "ride", "ride"]},
    {"question_id": "1574605", "question": "What is the name of the famous dreamworks animated film?",
     "answers": ["shrek", "shrek", "shrek", "shrek", "shrek 2", "shrek 2", "shrek", "shrek", "shrek's", "shrek"]},
    {"question_id": "3011875", "question": "Where is this?", "answers": []},
]

OCRBENCH_ROWS = [
    {"dataset": "IIIT5K", "question": "what is written in the image?", "question_type": "Regular Text Recognition",
     "answer": ["CHAIR"]},
    {"dataset": "IC13_857", "question": "what is written in the image? ", "question_type": "Irregular Text Recognition",
     "answer": ["Coffee"]},
    {"dataset": "WordArt", "question": "what is written in the image?", "question_type": "Artistic Text Recognition",
     "answer": ["HAPPY\nBIRTHDAY"]},
    {"dataset": "IAM", "question": "what is the handwriting in the image?", "question_type": "Handwriting Recognition",
     "answer": ["written"]},
    {"dataset": "ORAND", "question": "what is the number in the image?", "question_type": "Digit String Recognition",
     "answer": ["50427"]},
    {"dataset": "NonSemanticText", "question": "what are the characters in the image?",
     "question_type": "Non-Semantic Text Recognition", "answer": ["xqzv"]},
    {"dataset": "textVQA", "question": "What is the date?", "question_type": "Scene Text-centric VQA",
     "answer": ["May 5, 1990", "5/5/1990"]},
    {"dataset": "docVQA", "question": "What is the total?", "question_type": "Doc-oriented VQA",
     "answer": ["$12.50"]},
    {"dataset": "FUNSD", "question": "What is the value for the key 'DATE:'?", "question_type": "Key Information Extraction",
     "answer": ["１２／０３"]},
    {"dataset": "HME100k", "question": "Please write out the expression of the formula in the image using LaTeX format.",
     "question_type": "Handwritten Mathematical Expression Recognition", "answer": ["x ^ { 2 } + \\frac { A } { 2 }"]},
]
OCRBENCH_OUTPUTS = [  # per row: its gold in many spellings (see ocr_outputs)
    "The word is chair.", "chair", "CHAIR", "ＣＨＡＩＲ", "ch air", "coffee", "COFFEE!", "happy birthday",
    "HAPPY\nBIRTHDAY", "Happy\u3000Birthday", "written", "writ ten", "50427", "５０４２７", "50 427", "xqzv",
    "5/5/1990", "may 5, 1990", "May 5 1990", "$12.50", "12.50", "12/03", "１２／０３", "x^{2}+\\frac{A}{2}",
    "$x ^ { 2 } + \\frac { a } { 2 }$", "x^{2} + \\frac{A}{2} \n", "ｘ^{2}+\\frac{A}{2}", "", "I don't know",
]

SEEDBENCH_ROWS = [
    {"answer": "A", "choice_a": "One", "choice_b": "Two", "choice_c": "Three", "choice_d": "Four",
     "data_id": "1454426_2591111986", "data_type": "image", "question": "How many towels are in the image?",
     "question_id": "101669", "question_type_id": 5},
    {"answer": "C", "choice_a": "left", "choice_b": "right", "choice_c": "up", "choice_d": "down",
     "data_id": "v1.mp4", "data_type": "video", "question": "Where does the ball move?", "question_id": "20",
     "question_type_id": 10},
    {"answer": "D", "choice_a": "A red car", "choice_b": "A blue car", "choice_c": "A bus", "choice_d": "A bike",
     "data_id": "3.jpg", "data_type": "image", "question": "What is parked in front of the house?",
     "question_id": "7", "question_type_id": 2},
]

# ---------------------------------------------------------------- video

EGOSCHEMA_ROWS = [  # options as the hub has them: "C" is the camera wearer
    {"question_idx": "0074f737-11cb-497d-8d07-77c3a8127391", "video_idx": "0074f737-11cb-497d-8d07-77c3a8127391",
     "question": "Taking into account all the actions performed by c, what can you deduce about the primary objective and focus within the video content?",
     "option": ["C is cooking.", "C is doing laundry.", "C is cleaning the kitchen.", "C is cleaning dishes.",
                "C is cleaning the bathroom."], "answer": "3"},
    {"question_idx": "00b9a0de-c59e-49cb-a127-6081e2fb8c8e", "video_idx": "00b9a0de-c59e-49cb-a127-6081e2fb8c8e",
     "question": "What is the overarching theme of the video?",
     "option": ["A. c builds a shelf", "B. c paints a wall", "C. c fixes a bike", "D. c plants a tree",
                "E. c cleans a car"], "answer": "2"},
    {"question_idx": "01a3d4ba", "video_idx": "01a3d4ba", "question": "Which tool does c use most?",
     "option": ["a hammer", "a saw", "a drill", "a brush", "a knife"], "answer": 0},
]

NEXTQA_ROWS = [
    {"video": 4010069381, "frame_count": 369, "width": 640, "height": 480,
     "question": "why did the boy pick up the ball ", "answer": 2, "qid": 7, "type": "CW",
     "a0": "to throw it", "a1": "to clean it ", "a2": "give to dog", "a3": "to sit on it", "a4": "put it away"},
    {"video": 3376544720, "frame_count": 1612, "width": 640, "height": 360,
     "question": "what does the lady do after she stands up", "answer": 0, "qid": 3, "type": "TN",
     "a0": "walks away", "a1": "sits down", "a2": "dances", "a3": "claps", "a4": "waves"},
    {"video": 4882821564, "frame_count": 900, "width": 640, "height": 480, "question": "where is this video taken",
     "answer": 4, "qid": 1, "type": "DL", "a0": "beach", "a1": "park", "a2": "kitchen", "a3": "stage",
     "a4": "living room"},
]

VIDEOMME_ROWS = [
    {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
     "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
     "task_type": "Counting Problem",
     "question": "When demonstrating the Germany modern Christmas tree is initially decorated with apples, candles and berries, which kind of the decoration has the largest number?",
     "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
     "answer": "C"},
    {"video_id": "002", "duration": "medium", "domain": "Film & Television", "sub_category": "Movie & TV Show",
     "url": "https://www.youtube.com/watch?v=abcdefghijk", "videoID": "abcdefghijk", "question_id": "002-1",
     "task_type": "Action Reasoning", "question": "Why does the man open the door? ",
     "options": ["A. To leave.", "B. To let the dog in.", "C. To check the weather.", "D. To greet a friend."],
     "answer": "B"},
    {"video_id": "003", "duration": "long", "domain": "Multilingual", "sub_category": "Multilingual",
     "url": "https://www.youtube.com/watch?v=zyxwvutsrqp", "videoID": "zyxwvutsrqp", "question_id": "003-2",
     "task_type": "OCR Problems", "question": "What is written on the sign?",
     "options": ["A. Stop.", "B. Go.", "C. Wait.", "D. Exit."], "answer": "D"},
    {"video_id": "004", "duration": "short", "domain": "Sports Competition", "sub_category": "Basketball",
     "url": "https://www.youtube.com/watch?v=nosubtitle1", "videoID": "nosubtitle1", "question_id": "004-3",
     "task_type": "Temporal Reasoning", "question": "What happens first?",
     "options": ["A. A pass.", "B. A dunk.", "C. A foul.", "D. A timeout."], "answer": "a"},
]

EGOPLAN_ROWS = [
    {"sample_id": 1234, "video_id": "v1", "task_goal": "make tomato and egg stir-fry",
     "question": "unused", "choice_a": "wash tomato", "choice_b": "crack egg", "choice_c": "stir food",
     "choice_d": "put down knife", "golden_choice_idx": "B"},
    {"sample_id": 1235, "video_id": "v2", "task_goal": "cooking a pot of soup", "question": "unused",
     "choice_a": " pour water", "choice_b": "cut carrot", "choice_c": "Add salt ", "choice_d": "stir soup",
     "golden_choice_idx": "A"},
    {"sample_id": 1236, "video_id": "v3", "task_goal": "The goal is to tidy the desk", "question": "unused",
     "choice_a": "pick up pen", "choice_b": "open drawer", "choice_c": "wipe desk", "choice_d": "close laptop",
     "golden_choice_idx": "D"},
    {"sample_id": 1237, "video_id": "v4", "task_goal": "goal: store the tomatoes", "question": "unused",
     "choice_a": "open fridge", "choice_b": "take bag", "choice_c": "wash hands", "choice_d": "close fridge",
     "golden_choice_idx": "C"},
]

# Subtitles of the Video-MME rows: (start s, end s, cue text as written in the .srt).
FONT = '<font color="white" size=".72c">{}</font>'
VIDEOMME_SUBTITLES = {
    "fFjv93ACGo8": [(0.5 + 1.25 * i, 1.5 + 1.25 * i, FONT.format(f"line {i}")) for i in range(30)]
                   + [(5.0, 5.4, FONT.format("first") + " and " + FONT.format("second")),
                      (9.0, 12.0, "no font tag here"), (20.0, 21.0, FONT.format("late"))],
    "abcdefghijk": [(0.0, 2.0, FONT.format("Open the door.")), (0.0, 2.0, FONT.format("Same times: replaces it.")),
                    (3.0, 3.05, FONT.format("Too short to be sampled."))],
    # 300 short cues, about one in ten on screen at a sampled frame: lmms-eval lists them in
    # the order of a set of their indices, which for indices this large is not time order
    "zyxwvutsrqp": [(0.13 * i, 0.13 * i + 0.12, FONT.format(f"cue {i}")) for i in range(300)],
}
VIDEO_SECONDS = 40  # each test video: 40 s at 8 fps, 320 frames
