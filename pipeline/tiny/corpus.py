"""A small, fixed English corpus to train the tiny models' tokenizers on.

The tiny tokenizers must be rebuilt identically on any machine without the network,
so they are trained on this text and nothing else. It covers the words that prompts
and answers of image/video benchmarks use (questions, options, colours, counts,
objects, directions) so that typical prompts tokenize into a few dozen tokens rather
than hundreds of single bytes. Any other text still round-trips through the byte
fallback; it just takes more tokens. Changing this text changes every tiny tokenizer:
bump the cache version in ``pipeline.tiny`` when you do.
"""

CORPUS = """\
You are a helpful assistant. Describe the image in detail. What is shown in this image?
What is in the video? Describe the video. What happens in the video?
Answer the question using a single word or phrase.
Answer with the option's letter from the given choices directly.
Please answer yes or no. Is there a dog in the picture? Yes, there is a dog.
Is there a cat on the table? No, there is no cat on the table.
How many people are in the image? There are two people in the image.
How many cars are there? There are three cars, one red, one blue and one white.
What color is the bus? The bus is yellow. What color is the sky? The sky is blue.
Where is the man standing? The man is standing next to the door, on the left side.
What is the woman holding? The woman is holding an umbrella in her right hand.
What time of day is it? It is early in the morning, and the sun is rising.
Which object is closest to the camera? The chair is closest to the camera.
Options: A. red B. green C. blue D. black. The answer is C.
Question: What is the main object in the scene? Choices: (A) a tree (B) a house (C) a boat (D) a bird.
Select the best answer to the following multiple-choice question based on the video.
Respond with only the letter (A, B, C, or D) of the correct option.
The best answer is A. The correct option is B. The right choice is D.
USER: What is in the picture? ASSISTANT: A cat. USER: Why? ASSISTANT: Because it is.
system user assistant. The user asks, the assistant answers, the system sets the rules.
A chat between a curious human and an artificial intelligence assistant.
The assistant gives helpful, detailed, and polite answers to the human's questions.
The quick brown fox jumps over the lazy dog. A small boy plays with a ball in the park.
A group of children are sitting on the grass under a large tree near the river.
The kitchen has a white fridge, a wooden table, four chairs and a window above the sink.
A train is arriving at the station while people wait on the platform with their bags.
Two dogs run along the beach; the waves are high and the water is cold and grey.
The text on the sign says "Stop". The number on the shirt is 23. The price is $4.50.
First, the person opens the box. Then they take out a phone. Finally, they close the lid.
The chart shows that sales increased from 2019 to 2021 and then decreased in 2022.
In the top right corner there is a clock; in the bottom left corner there is a lamp.
Count the apples on the plate: one, two, three, four, five, six, seven, eight, nine, ten.
Zero, eleven, twelve, twenty, thirty, forty, fifty, hundred, thousand, first, second, third.
Colors: red, orange, yellow, green, blue, purple, pink, brown, black, white, grey, gold.
Shapes: circle, square, triangle, rectangle, line, point, cube, sphere, cylinder.
Directions: left, right, up, down, above, below, behind, in front of, inside, outside, between.
Animals: dog, cat, horse, cow, sheep, bird, fish, elephant, giraffe, zebra, bear, lion.
Vehicles: car, bus, truck, bicycle, motorcycle, train, airplane, boat, ship.
Things: person, man, woman, child, table, chair, cup, bottle, book, phone, laptop, screen.
Actions: walking, running, sitting, standing, eating, drinking, reading, writing, talking.
Why did the girl smile? Because she received a gift from her friend at the party.
What will happen next? The ball will fall to the ground and roll under the car.
Does the man wear glasses? He does not wear glasses, but he wears a hat and a coat.
Can you see the mountains? Yes, the mountains are far away and covered with snow.
Is it raining? It is not raining; the weather is sunny, warm and clear today.
This is a photo of a street at night with bright lights, shops and many people.
The video shows a cooking show where a chef cuts vegetables and puts them in a pan.
The scene changes quickly: a car drives by, a bird flies away, and the light turns green.
Read the text in the image and answer the question. Give a short answer.
The document is a letter dated March 5; it is signed by the manager of the company.
Please think step by step, then give the final answer in one sentence.
The image is blank. The video is short. The frame is dark. The picture is bright.
abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ 0123456789
. , ; : ! ? ' " ( ) [ ] { } < > / \\ | - _ + = * & % $ # @ ~ `
"""
