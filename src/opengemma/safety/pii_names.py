"""PERSON by rule in the Latin-script languages: cue words, signatures, fields and a lexicon.

Cues in English, German, French, Spanish, Italian, Portuguese and Dutch: greetings (`Dear`,
`Sehr geehrte Frau`, `Hola`, `Beste`), titles (`Mr.`, `Herr`, `Mme`, `Sr.`, `Dott.ssa`, `SGT`),
self-introductions (`my name is`, `je m'appelle`, `soy`, `aqui é a`), form and letter fields
(`Name:`, `Nom :`, `Cognome e nome:`, `Bill to:`), and signatures (a closing line such as
`Mit freundlichen Grüßen` or `Bien à vous,` followed by a name line). Without a cue a name is a
first name from the 48k-name dictionary of the `gender-guesser` package followed by surnames.
Capitalisation alone never makes a name (German capitalises every noun): `COMMON_WORDS` is a
stop-list of capitalised common words, titles and greetings that no name span may contain.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from opengemma.safety.pii_base import LOWER, UPPER, Finding, RuleDetector
from opengemma.safety.pii_scripts import script_names

PARTICLE = r"(?:van|der|den|de|del|della|di|da|do|dos|das|du|von|zu|la|le|bin|ibn|al|ten|ter)"
_NAME_TOKEN = rf"[{UPPER}][{LOWER}'’]+(?:-[{UPPER}][{LOWER}'’]+)?"
# Words of a name are one space apart: two spaces or a tab end it (form columns, tables).
_SURNAMES = rf"(?:[ \u00a0](?:{PARTICLE}[ \u00a0]){{0,2}}{_NAME_TOKEN}){{1,3}}"
_NAME = rf"{_NAME_TOKEN}(?:{_SURNAMES})?"
# After a title a name may open with initials, a given name in brackets or a capitalised
# particle: "dr. K. Smits", "Dhr. J.P. (Jan-Pieter) de Vries", "heer De Vries".
_INITIALS = rf"(?:(?:[{UPPER}]\.){{1,3}}[ \u00a0]?(?:\({_NAME_TOKEN}\)[ \u00a0])?)"
_CAP_PARTICLE = (
    r"(?:(?:De|Van|Von|Ten|Ter|Di|Da|Del|Della|Dos|Das|Le|La)[ \u00a0](?:der |den |de la )?)"
)
_TITLED_NAME = (
    rf"(?:{_INITIALS}(?:{PARTICLE}[ \u00a0])?{_NAME_TOKEN}|{_CAP_PARTICLE}{_NAME_TOKEN}|{_NAME})"
)
_GREETING = (
    r"Dear|Hi|Hello|Hey|Hola|Bonjour|Bonsoir|Salut|Coucou|Hallo|Liebe|Lieber|Beste|Geachte"
    r"|Caro|Cara|Gentile|Gentilissim[ao]|Ol[áa]|Oi|Prezad[oa]|Estimad[oa]|Querid[oa]|Ciao"
    r"|Buongiorno|Sehr geehrte[rn]?|Madame|Monsieur|Exm[oa]\.?|Thanks|Thank you|Gracias|Merci"
    r"|Danke|Grazie|Obrigad[oa]|Bedankt|Goedemorgen|Guten Morgen|Guten Tag|Moin|Servus|Buenos días"
    r"|Buenas tardes|Bom dia|Boa tarde|Salve|Egregi[oa]|Spettabile|Cher|Chère|Hoi"
    r"|Szanown[ya]|Szanowni|Drog[ia]|Dzień dobry|Witam|Cześć|Hej|Hejsan|Kära|Bästa|Sayın"
    r"|Merhaba|Sevgili|Değerli|Namaste|Namaskar|Kære|Goddag|Vážený|Vážená|Vážení|Milý|Milá"
    r"|Dobrý den|Ahoj|Yth\.?|Yang terhormat|Halo|Selamat pagi|Selamat siang|Kính gửi|Chào"
    r"|Thân gửi|Xin chào"
)
_TITLE = (
    r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Herr|Herrn|Frau|Mme|Mlle|M\.|Madame|Monsieur|Mademoiselle"
    r"|Sr|Sra|Srta|Señor|Señora|Senhor|Senhora|Sig|Sig\.ra|Signora|Signor|Dott|Dott\.ssa|Ing"
    r"|Avv|Dhr|Mevr|Mw|[Mm]evrouw|[Mm]eneer|de heer|Don|Doña|Dona|SGT|Sgt|PFC|Cpl|Capt|Lt|Col|Maj"
    r"|Familie|Fam|Dipl\.-Ing|Maître|Pan|Pani|Panie|Panu|Pana|Shri|Shrimati|Smt|Sri|Kumari"
    r"|dr|drs|ir|mr|ing|prof|heer|mevr|dhr|pan|pani|panią|panem|panu|pana|pana|Panią|Panem"
    r"|Kollege|Kollegin|Sayın|Hr|Fru|Frk|pane|paní|pan|slečno|slečna|Ing|Mgr|MUDr|JUDr|PhDr|Bc"
    r"|Bapak|Bpk|Ibu|Bu|Pak|Sdr|Sdri|Saudara|Saudari|ông|bà|anh|chị|cô|chú|Ông|Bà|Anh|Chị"
)
_INTRO = (
    r"[Mm]y name is|[Nn]ame is|I'm|I am|i'm|[Tt]his is|[Jj]e suis|[Jj]e m'appelle|c'est"
    r"|[Ii]ch bin|[Ii]ch heiße|[Mm]e llamo|[Ss]oy|[Mm]i chiamo|[Ss]ono|[Ss]ou|[Aa]qui é(?: [ao])?"
    r"|[Ee]u sou|[Ii]k ben|[Mm]ijn naam is|[Ii]k heet|[Nn]azywam się|[Mm]am na imię|[Jj]estem"
    r"|[Jj]ag heter|[Jj]ag är|[Mm]itt namn är|[Bb]enim adım|[Aa]dım|[Mm]era naam"
)
_FIELD = (
    r"[Nn]ame|[Ff]ull[_ ]?[Nn]ame|Nom(?: complet)?|Prénom|Nombre(?: completo)?|Nome(?: e cognome)?"
    r"|Cognome(?: e nome)?|Naam|Vorname(?: Nachname)?|Nachname|Customer|Contact|Account holder"
    r"|Holder|Patient|Author|Bill to|Ship to|Sold to|Deliver to|Attn\.?|Titular|Inhaber"
    r"|Empfänger|Destinatari[oa]|Destinatário|Kunde|Client|Cliente|Klant|Paciente|Patiënt|From"
    r"|De|Von|Da|Van|Sender|To|An|Para|Aan|Cc|[Ff]irst[_ ]?[Nn]ame|[Ll]ast[_ ]?[Nn]ame|Surname"
    r"|Given names?|Family name|Nom de famille|Voornaam|Voornamen|Achternaam|Apellidos?"
    r"|Sobrenome|Nome completo|Kontoinhaber(?:in)?|Ansprechpartner(?:in)?|Contactpersoon"
    r"|Persona de contacto|Referente|Responsável|Responsable|Signature|Signed|Unterschrift"
    r"|Firmado|Assinado|Ondertekend|Getekend|Gezeichnet|Requested by|Assigned to|Owner|Reporter"
    r"|Mitarbeiter(?:in)?|Employee|Medewerker|Empleado|Dipendente|Funcionário|Arzt|Médecin"
    r"|Médico|Medico|Huisarts|Doctor|Tenant|Mieter(?:in)?|Locataire|Inquilino|Huurder|Signé"
    r"|Atendente|Agent|Advisor|Operator|Sachbearbeiter(?:in)?|Bearbeiter(?:in)?|Conseill(?:er|ère)"
    r"|Asesora?|Agente|Operatore|Consulente|Handläggare|Consultor[a]?|Vendedor[a]?"
    r"|Imię(?: i nazwisko)?|Nazwisko|Odbiorca|Nadawca|Klient|Namn|Förnamn|Efternamn|Mottagare"
    r"|Avsändare|Kund|Ad|Soyad|Ad[ıi]? Soyad[ıi]?|İsim|Alıcı|Gönderen|Müşteri|Yetkili"
    r"|Navn|Fornavn|Efternavn|Modtager|Afsender|Kontaktperson|Jméno(?: a příjmení)?|Příjmení"
    r"|Příjemce|Odesílatel|Zákazník|Nama(?: lengkap)?|Penerima|Pengirim|Pelanggan|Pemegang polis"
    r"|Họ và tên|Họ tên|Tên|Người nhận|Người gửi|Khách hàng|Người liên hệ"
)
_CLOSING = (
    r"Regards|Kind regards|Best regards|Warm regards|Best wishes|Best|Sincerely|Yours sincerely"
    r"|Yours faithfully|Yours|Cheers|Thanks|Thank you|Mit freundlichen Grüßen|Freundliche Grüße"
    r"|Viele Grüße|Beste Grüße|Liebe Grüße|Herzliche Grüße|Gruß|Grüße|Cordialement"
    r"|Bien cordialement|Bien à vous|Salutations|Amitiés|Bisous|Atentamente|Saludos"
    r"|Un saludo|Un abrazo|Cordiales saludos|Cordiali saluti|Distinti saluti|Un saluto|Saluti"
    r"|Atenciosamente|Abraços|Abraço|Um abraço|Cumprimentos|Groeten|Met vriendelijke groet"
    r"|Hartelijke groet|Groetjes|Vriendelijke groeten|Z poważaniem|Pozdrawiam|Pozdrowienia"
    r"|Serdecznie pozdrawiam|Z wyrazami szacunku|Med vänliga hälsningar|Med vänlig hälsning"
    r"|Vänliga hälsningar|Hälsningar|Mvh|Saygılarımla|Saygılar|Sevgiler|İyi çalışmalar"
    r"|Warm wishes|Many thanks|With thanks|Respectfully|Thanks and regards|Regards and thanks"
    r"|Best regards|Kind regards|Take care|Talk soon|See you|Love|Hugs|XOXO|Greetings|Ciao"
    r"|Saludos cordiales|Un cordial saludo|Muchas gracias|Besos|Abrazos|Cordialmente"
    r"|Hasta luego|Hasta pronto|Mit besten Grüßen|Schöne Grüße|Herzlichst|Alles Gute|Bis bald"
    r"|Bis dann|LG|VG|MfG|À bientôt|A bientôt|Bonne journée|Bien amicalement|Bises|A presto"
    r"|A dopo|Un abbraccio|Baci|Tot ziens|Tot snel|Liefs|Até logo|Até breve|Beijos|Bjs"
    r"|Med venlig hilsen|Venlig hilsen|Kærlig hilsen|Hilsen|Mange hilsner|S pozdravem"
    r"|S přátelským pozdravem|Děkuji|Hormat kami|Hormat saya|Salam|Terima kasih|Trân trọng"
    r"|Thân ái|Chúc sức khỏe"
)
# Greetings as chats write them, in lower case ("oi Thiago!!", "hey Kayla").
_LOWER_GREETING = r"hi|hey|hello|dear|oi|ol[áa]|hola|ciao|salut|coucou|hallo|hej|hoi|merhaba|moin"
# A field label opens a line or a form column (two spaces, a tab, a middle dot or bar before
# it); German labels may carry a gender suffix ("Mitarbeiter/in:").
_FIELD_AT = rf"(?:(?m:^)[ \t]*|[ \t]{{2,}}|\t|[·|][ \t]*)(?:{_FIELD})(?:/in|\(in\)|\*in|:in)?"
_CUE = re.compile(
    rf"(?:\b(?:{_GREETING}|{_LOWER_GREETING})[,:]?[ \t]+(?:(?:{_TITLE})\.?[ \t]+){{0,3}}"
    rf"|\b(?:(?:{_TITLE})\.?[ \t]+){{1,3}}"
    rf"|\b(?:{_INTRO})[ \t]+|{_FIELD_AT}[ \t]*[:：][ \t]*"
    r"|\b(?:[Ff]ull_?[Nn]ame|[Nn]ame|[Cc]ustomer|[Aa]uthor)\"?\W{1,4})"
    rf"(?P<name>{_TITLED_NAME})"
)
# "Nom : LEFEBVRE", "Nachname: MÜLLER": a surname in capitals under a surname label.
_CAPS_FIELD = re.compile(
    r"(?:(?m:^)[ \t]*|[ \t]{2,}|\t)(?:Nom(?: de famille)?|Name|Nachname|Surname|Last name"
    r"|Family name|Apellidos?|Cognome|Achternaam|Nazwisko|Efternamn|Soyad[ıi]?|Sobrenome)"
    rf"[ \t]*[:：][ \t]*(?P<name>[{UPPER}]{{3,}}(?:-[{UPPER}]{{2,}})?(?:[ ]{_NAME_TOKEN})?)"
    r"(?=[ \t]{2,}|[ \t]*(?:$|\n|,))"
)
# "Agent (Kayla):", "Rep (Priya):": a role, then the speaker's name in brackets.
_ROLE_SPEAKER = re.compile(rf"(?m)^[ \t]*[{UPPER}][{LOWER}]+[ \t]*\((?P<name>{_NAME})\):")
# Chat lines "[19:21] Thiago:" / "19:21 Thiago:": with two or more such lines a capitalised
# speaker is a person (roles such as System or Bot are in the stop-list).
_CHAT_SPEAKER = re.compile(
    rf"(?m)^[ \t]*(?:\[[^\]\n]{{3,25}}\]|\d{{1,2}}:\d{{2}}(?::\d{{2}})?)[ \t]*-?[ \t]*"
    rf"(?P<name>{_NAME_TOKEN}(?:[ ]{_NAME_TOKEN})?):"
)
# Vietnamese: a family name of the common set, then one to three capitalised syllables
# ("Nguyễn Thị Minh Anh", "Trần Văn Hùng").
_VI_NAME = re.compile(
    r"(?<![\w])(?P<name>(?:Nguyễn|Trần|Lê|Phạm|Hoàng|Huỳnh|Phan|Vũ|Võ|Đặng|Bùi|Đỗ|Hồ|Ngô|Dương"
    r"|Lý|Đào|Đinh|Trịnh|Lâm|Cao|Tạ|Lương|Vương|Triệu|Tô|Kiều|Quách|Đoàn|Tăng|Lưu|Phùng"
    rf"|Trương|Châu|Mạc|Hứa)(?:[ ][{UPPER}][{LOWER}]*){{1,3}})(?![\w])"
)
# "la sœur d'Inès", "l'Anna": a known first name after an elided article (lexicon checked).
_ELIDED = re.compile(rf"\b[dDlL]['’](?P<name>{_NAME_TOKEN})\b")
_SIGNATURE = re.compile(
    rf"(?m)^[ \t]*(?:{_CLOSING})[ \t]*[,!.]?[ \t]*(?:\n[ \t]*){{0,2}}(?P<name>{_NAME})"
    r"(?=[ \t]*(?:\n|$|,))"
)
# "... Atentamente, Lucía Fernández" / "Best, Priya": a closing and a comma inside a line.
_INLINE_SIGNATURE = re.compile(
    rf"(?<!\w)(?:{_CLOSING})[ \t]*,[ \t]*(?P<name>{_NAME})(?=[ \t]*(?:$|\n|[.!]))"
)
# "Deine Anna" / "Your friend, Tom" at the end of a line: the name must be a known first name.
_POSSESSIVE_SIGNATURE = re.compile(
    r"(?<!\w)(?:Deine|Dein|Eure|Euer|Your(?: friend)?|Votre|Ta|Tu|Tua|Teu|Tuo|Je)[ \t]*,?[ \t]+"
    rf"(?P<name>{_NAME})(?=[ \t]*(?:$|\n))"
)
# "Ahmet Bey", "Ayşe Hanım", "Rajesh ji": an honorific after the name.
_HONORIFIC_AFTER = re.compile(
    rf"(?P<name>{_NAME})[ \t]+(?:(?:[Bb]ey|[Hh]an[ıi]m|[Ee]fendi)[{LOWER}]{{0,5}}|ji|Ji)\b"
)
# "Ik heb Lisa gisteren gebeld": a frequent first name alone inside a sentence (after a
# lower-case word that is no article, before no capitalised word).
_LONE_NAME = re.compile(
    rf"(?<=[{LOWER}] )(?P<name>{_NAME_TOKEN})(?![ \t]*[{UPPER}\d])(?=[ \t]*(?:[{LOWER},.!?;:)]|$))"
)
ARTICLES = frozenset(  # articles, and prepositions that put a place after them
    "der die das den dem des ein eine einen einem einer the an le la les un une el los las "
    "il lo gli os as um uma una uno unos unas het een de del della al au aux zum zur im am vom "
    "in en nach aus à em na nel nella w we från at near bei".split()
)


# Words after which a name is that of a street, building or institution, not of a person:
# "rue Gustave Eiffel", "Av. Afonso Pena", "al. Jana Pawła II", "amphithéâtre Louis Néel".
_PLACE_WORDS = frozenset(
    "rue avenue av ave boulevard bd blvd allée place quai impasse chemin cours square via viale "
    "corso piazza piazzale largo vicolo calle avenida paseo plaza camino carrer rua praça travessa "
    "alameda largo rodovia estrada ul ulica al aleja plac os osiedle gatan vägen straße strasse "
    "platz allee straat laan plein gracht weg amphithéâtre amphi salle bâtiment laboratoire "
    "école lycée collège université institut hôpital stade gare aéroport centre fondation "
    "musée théâtre pont parc port station aeroporto stazione ospedale scuola teatro museo "
    "hospital colegio escuela universidad estadio instituto universidade aeropuerto "
    "mount mt lake fort cape bulvarı bulvar caddesi cad sokak sok mahallesi mah đường phố "
    "ngõ hẻm phường quận huyện tp jl jalan gang gg ulice náměstí nám vej gade".split()
)


def place_word(word: str) -> bool:
    """`word` names a kind of street, building or institution (`rue`, `Av.`, `Corso`)."""
    w = word.lower().rstrip(".")
    return w in _PLACE_WORDS or (w[1:2] in ("'", "’") and w[2:] in _PLACE_WORDS)


def after_place_word(text: str, start: int) -> bool:
    """The word before `start` names a street, building or institution (`rue`, `Av.`, `al.`,
    `Laboratoire`): the capitalised words after it are that place's name."""
    words = text[max(0, start - 16) : start].split()
    return bool(words) and place_word(words[-1])


def after_article(text: str, start: int) -> bool:
    """The word before `start` is an article or a place preposition (`die Mark`, `in Austin`):
    a lone capitalised word after it is a noun or a place, not a person."""
    words = text[max(0, start - 12) : start].split()
    return bool(words) and words[-1].lower() in ARTICLES


_LONE_MIN_FREQUENCY = 5  # gender-guesser class 5: about 1 in 30,000 people of a country
_LEXICON_NAME = re.compile(rf"\b(?P<first>{_NAME_TOKEN})(?P<rest>{_SURNAMES})")
_SPEAKER = re.compile(rf"(?m)^[ \t]*(?:\[[^\]\n]*\][ \t]*)?(?P<first>{_NAME_TOKEN}):")
_FIELD_SEP = re.compile(
    rf"(?:^|[,;\t|]|\n)[ \t]*\"?(?P<name>{_NAME_TOKEN}(?:{_SURNAMES}))\"?[ \t]*(?=$|[,;\t|]|\n)"
)
_NAME_FIELD = re.compile(
    r"(?i)^(?:full_?name|name|first_?name|last_?name|surname|author|customer)$"
)

COMMON_WORDS = frozenset(
    # months, days, seasons (en, de, fr, es, it, pt, nl)
    "January February March April May June July August September October November December "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday Summer Winter Autumn Spring "
    "Januar Februar März Juni Juli Oktober Dezember Montag Dienstag Mittwoch Donnerstag Freitag "
    "Samstag Sonntag Janvier Février Mars Avril Mai Juin Juillet Août Septembre Octobre Novembre "
    "Décembre Lundi Mardi Mercredi Jeudi Vendredi Samedi Dimanche Enero Febrero Marzo Abril Mayo "
    "Junio Julio Agosto Lunes Martes Miércoles Jueves Viernes Sábado Domingo Gennaio Febbraio "
    "Aprile Maggio Giugno Luglio Settembre Ottobre Dicembre Lunedì Martedì Janeiro Fevereiro "
    "Março Maio Junho Julho Setembro Outubro Dezembro Januari Februari Maart Mei Augustus "
    # greetings, closings, titles, politeness
    "Dear Hello Hi Hey Thanks Thank Regards Best Cheers Sincerely Yours Kind Warm Please Welcome "
    "Sir Madam Madame Monsieur Mr Mrs Ms Dr Prof Mme Mlle Herr Frau Sehr Geehrte Geehrter Liebe "
    "Lieber Hallo Grüße Gruß Viele Freundlichen Bitte Danke Vielen Dank Bonjour Salut Merci "
    "Bien Cordialement Amitiés Hola Gracias Saludos Atentamente Estimado Estimada Querido "
    "Querida Abrazo Ciao Grazie Saluti Cordiali Distinti Gentile Caro Cara Olá Obrigado "
    "Obrigada Abraços Atenciosamente Prezado Prezada Beste Groeten Groetjes Bedankt Geachte "
    # articles, pronouns, conjunctions that start sentences
    "The This That These Those Our Your My His Her Their We You They It He She And But Or "
    "Der Die Das Ein Eine Einen Ihr Ihre Ihren Sie Wir Und Mit Für Von Bei Zum Zur Mein Dein Sein "
    "Unser Le La Les Un Une Des Du Votre Vos Nous Vous Avec Pour Mon Ma Mes El Los Las Una Unos "
    "Su Sus Nuestro Usted Con Para Il Lo Gli Uno Suo Sua Nostro Per Um Uma Os As Seu Sua Nosso "
    "Com Het Een Uw Wij Jij Ik Met Voor Van "
    # office, product and technical words seen capitalised in text
    "Success Successful Luhn Deep Learning Machine Neural Network Data Science Version Release "
    "Build Order Invoice Total Amount Price Customer Support Team Service Street Road Avenue "
    "Suite Tel Phone Fax Email Mobile Note Notes Error Warning Info Debug Status Update Account "
    "Bank Card Payment Account Ticket Case Page Name Address Contact Subject Date Time Office "
    "Company Group Project Report Meeting Manager Director Department Rechnung Auftrag Betrag "
    "Kunde Kundin Bestellung Zahlung Rückzahlung Anschrift Adresse Telefon Commande Facture "
    "Montant Adresse Pedido Factura Importe Dirección Ordine Fattura Importo Indirizzo Pedido "
    "Fatura Valor Endereço Factuur Bedrag Adres Bestelling Straße Strasse Platz Weg Rue Calle "
    "Via Rua Praça Plaza Piazza Avenida Gracht Straat Laan Plein USS Navy Army Unit Box "
    # form and letter labels (en, de, fr, es, it, pt, nl)
    "Naam Voornaam Voornamen Achternaam Woonplaats Postcode Geboortedatum Telefoonnummer Vorname "
    "Nachname Geburtsdatum Hausnummer Ort Wohnort Postleitzahl PLZ Unterschrift Prénom Nom Ville "
    "Pays Nombre Apellido Apellidos Ciudad País Nome Cognome Città Sobrenome Cidade Estado Bairro "
    "Signature Datum Fecha Data Betreff Objet Asunto Oggetto Assunto Onderwerp Anhang Anlage "
    "Adjunto Allegato Anexo Bijlage Mail E-Mail Nummer Handynummer Kontakt Kontoinhaber "
    "Verwendungszweck Ansprechpartner Firstname Lastname Surname Recipient Sender Empfänger "
    "Absender Destinataire Expéditeur Remitente Mittente Remetente Afzender Ontvanger Gegevens "
    # possessives and pronouns that open sentences
    "Meine Meinen Meiner Meinem Deine Deinen Deiner Deinem Dein Ihrem Ihrer Unsere Unseren Euer "
    "Eure Mijn Jouw Zijn Onze Hun Mon Son Notre Leur Leurs Mio Tuo Meu Minha Teu Mi Tu Nuestra "
    "Vuestro Ich Du Er Es Man Je Il Elle On Ils Yo Él Nosotros Io Lui Noi Eu Ele Ela Nós Hij Zij "
    # office, shop and software nouns (en, de, fr, es, it, pt, nl)
    "Warehouse Office Store Shop Headquarters Reception Sales Marketing Finance Billing Shipping "
    "Returns Department Services Client Clients Pull Request Design Doc Action Items Standup "
    "Sprint Backlog Roadmap Quarterly Summary Agenda Minutes Dashboard Admin Administrator User "
    "Guest Owner Staff Hotline Helpdesk Server Database Migration Deployment Abteilung Einkauf "
    "Verkauf Vertrieb Buchhaltung Personal Geschäftsführung Lager Termin Unterlagen Antwort Frage "
    "Problem Angebot Vertrag Lieferung Versand Paket Rücksendung Kündigung Rückruf Hilfe "
    "Datenbank Aufgaben Projekt Besprechung Schön Société Entreprise Livraison Colis Devis "
    "Magasin Entrepôt Réception Ventes Empresa Almacén Tienda Envío Paquete Departamento Ventas "
    "Azienda Magazzino Negozio Spedizione Pacco Ufficio Modulo Reparto Vendite Armazém Loja "
    "Entrega Nota Fiscal Boleto Recibo Contrato Setor Bedrijf Magazijn Winkel Levering Pakket "
    "Afdeling Klantenservice Verkoop Everyone Paris "
    # Polish, Swedish and Turkish greetings, titles, possessives and labels
    "Szanowny Szanowna Szanowni Panie Pani Pan Państwo Dzień Dobry Witam Cześć Pozdrawiam Mój "
    "Moja Moje Twój Nasz Adres Ulica Miasto Hej Hälsningar Vänliga Mitt Min Mina Din Vår Adress "
    "Gatan Sayın Merhaba Saygılarımla Bey Hanım Benim Senin Bizim Adres Sokak Cadde Mahalle "
    "Sipariş Kargo Fatura "
    # plural forms of address: "Sehr geehrte Damen und Herren", "Hola a todos"
    "Damen Herren Mesdames Messieurs Señoras Señores Signore Signori Senhoras Senhores Dames "
    "Heren Team Tutti Todos Todas Alle Everyone All Folks Colleagues Kollegen Collègues "
    # products, platforms and brands a named-entity model takes for people
    "Chrome Windows Firefox Safari Linux Android Excel Outlook Teams Slack Zoom Docker "
    "Kubernetes Python Java Amazon Google Apple Microsoft Visa Stripe PayPal Mastercard iPhone "
    "Samsung Siri Alexa Cortana Jira Confluence GitHub GitLab Ubuntu Debian Oracle "
    "Tesla Uber Airbnb Netflix Spotify WhatsApp Telegram Signal Gmail Dropbox Notion Figma "
    "Redis Postgres PostgreSQL MySQL Kafka Spark Hadoop Airflow Terraform Ansible Nginx Apache "
    "Grafana Prometheus Elasticsearch Kibana Jupyter Pandas NumPy React Angular Vue Django Flask "
    # holidays and wishes
    "Merry Christmas Happy Birthday Easter Halloween Weihnachten Ostern Noël Navidad Natale "
    "Pascua Páscoa Kerstmis Pasen "
    # street, building and estate words ("Canal Wharf", "Brookhaven Ln", "Sai Kripa Apartments")
    "Lane Ln Drive Court Ct Grove Wharf Crescent Terrace Square Blvd Boulevard Ave Pkwy "
    "Parkway Hwy Highway Circle Cir Rd St Apartments Apts Apartment Tower Towers Building "
    "Residency Heights Gardens Mall Centre Center Estate Mews Quay Yard Family Familie Famille "
    "Cabinet Kanzlei Verwaltung Verwaltungs Elektromeister Meisterbetrieb "
    # companies and trades ("Albright Woodworks", "Rowan Interiors Ltd")
    "Ltd Limited Inc LLC GmbH Works Woodworks Interiors Studio Studios Consulting Solutions "
    "Systems Technologies Partners Associates Holdings Industries Enterprises Logistics Motors "
    "Foods Pharma Insurance Bakery Cafe Café Restaurant Hotel Clinic Pediatrics Dental Academy "
    "School Realty Properties Labs Media Digital Capital Ventures Trust Foundation "
    # roles, relations and labels read as names ("Child's name", "Vid frågor", "Bel dan")
    "Child Children Guardian Mother Father Member Agent Rep Representative Advisor "
    "Operator Moderator System Bot Assistant Courier Ship Lieu Vid Bel Kollege "
    "Kollegin Colleague Atendente Dott Senhor Senhora Sig Sra Sr Srta Signora Signor Doña "
    "Herrn Mevrouw Meneer Heer Pani Pan Panie Bey Hanım Shri Smt Reg VAT GSM Tel Fax Blv "
    "Bulvarı Anda Kami Terima Kasih Tak Hej Kære Vážený Vážená Dobrý Chào Kính".split()
)
# Common given names of Brazil, India, West and Southern Africa, Indonesia and Ireland that
# the gender-guesser dictionary lacks (frequency class 6 given to each).
_EXTRA_FIRST_NAMES = (
    "Thiago Davi Kauã Isadora Matheus Wellington Cauã Kaique Emanuelly Maitê Thaís Thayná "
    "Jéssica Rayssa Raíssa Ícaro Vinícius Everton Cleber Aarav Vihaan Ishaan Kavya Ananya "
    "Aadhya Saanvi Diya Riya Chidi Ngozi Oluwaseun Kwame Wanjiru Tendai Thabo Chinedu Emeka "
    "Adaeze Chiamaka Abena Tunde Yetunde Sipho Themba Lerato Ciarán Budi Siti Agus Putri "
    "Wayan Ketut Wulan Bayu Rizky Fajar Ayu".split()
)
# Endings of abstract and compound nouns that no personal name has (German -heit/-ung...,
# Romance -tion/-ción, abbreviations such as Rechnungsnr).
_COMMON_SUFFIXES = (
    "heit", "keit", "schaft", "ierung", "nummer", "nr", "tion", "ción", "zione", "ção", "ungen",
    "ismus", "ität", "zweck", "stelle", "abteilung",
)  # fmt: skip


@lru_cache(maxsize=1)
def _name_frequencies() -> dict[str, int]:
    """First name -> its highest frequency class over the countries of the `gender-guesser`
    dictionary (1 rare ... 13 very common; UTF-8, columns counted in characters)."""
    try:
        import gender_guesser.detector as gg
    except ImportError:
        return {}
    path = Path(gg.__file__).parent / "data" / "nam_dict.txt"
    names: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line[0] in "#=" or len(line) < 30:
                continue
            name = line[3:29].strip().replace("+", "-")
            freq = max((int(c, 16) for c in line[30:-1] if c in "123456789ABCD"), default=0)
            if len(name) > 2 and name.replace("-", "").isalpha():
                names[name] = max(freq, names.get(name, 0))
    for name in _EXTRA_FIRST_NAMES:
        names[name] = max(6, names.get(name, 0))
    return names


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """The first names of the `gender-guesser` package's dictionary (empty if not installed)."""
    return frozenset(set(_name_frequencies()) - COMMON_WORDS - _NOT_NAMES)


_NOT_NAMES = frozenset(
    "Will Bill Mark Grant Page Rich Rose Star King Price Case Order Ticket Park Bela Vista "
    "Santa Santo San Saint Sainte Bello Bella".split()
)


def has_common_word(span: str) -> bool:
    """True when a word of `span` is in the stop-list of capitalised common words."""
    for word in span.split():
        w = word.strip(".,;:'’\"")
        if w in COMMON_WORDS or (len(w) > 5 and w.lower().endswith(_COMMON_SUFFIXES)):
            return True
    return False


_NAME_COLUMN = re.compile(
    r"(?i)^(?:full_?name|name|first_?name|last_?name|given_?name|family_?name|surname|"
    r"vorname|nachname|nombre|apellidos?|pr[ée]nom|nom|nome|cognome|sobrenome|voornaam"
    r"|achternaam|naam|imi[ęe]|nazwisko|f[öo]rnamn|efternamn|ad|soyad|customer|contact"
    r"|author|owner|employee|patient|recipient|sender)$"
)
_CELL_NAME = re.compile(rf"{_NAME}")


def table_names(text: str) -> list[tuple[int, int]]:
    """Cells under a name column of a delimited table (`first_name,last_name` header, then
    `Hans,Becker`): (start, end) of each cell value that is written like a name."""
    lines = text.split("\n")
    header = lines[0]
    delim = max(",;\t|", key=header.count)
    if header.count(delim) == 0:
        return []
    cols = [i for i, c in enumerate(header.split(delim)) if _NAME_COLUMN.match(c.strip(' "'))]
    out, pos = [], len(header) + 1
    for line in lines[1:]:
        cells, start = line.split(delim), pos
        pos += len(line) + 1
        if not cols or len(cells) != header.count(delim) + 1:
            continue
        for i, cell in enumerate(cells):
            value = cell.strip(' "')
            if i in cols and _CELL_NAME.fullmatch(value) and not has_common_word(value):
                s = start + sum(len(c) + 1 for c in cells[:i]) + cell.index(value)
                out.append((s, s + len(value)))
    return out


class NameRuleDetector(RuleDetector):
    """PERSON from cue words, signatures, a first-name lexicon and one-name-per-cell rows."""

    name, types, kind = "name-rules", frozenset({"PERSON"}), "rule+lexicon"

    def __init__(self) -> None:
        self.lexicon = first_names()

    def describe(self) -> dict[str, Any]:
        return super().describe() | {
            "lexicon": "gender-guesser nam_dict",
            "names": len(self.lexicon),
        }

    def find(self, text: str, field: str) -> list[Finding]:
        out = [
            self._hit(m.start("name"), m.end("name"), 0.75)
            for pattern in (
                _CUE,
                _SIGNATURE,
                _INLINE_SIGNATURE,
                _HONORIFIC_AFTER,
                _ROLE_SPEAKER,
                _VI_NAME,
            )
            for m in pattern.finditer(text)
            if not has_common_word(m.group("name")) and not after_place_word(text, m.start("name"))
        ]
        out += [
            self._hit(m.start("name"), m.end("name"), 0.7)
            for m in _CAPS_FIELD.finditer(text)
            if not has_common_word(m.group("name").title())
        ]
        speakers = list(_CHAT_SPEAKER.finditer(text))
        if len(speakers) >= 2:
            out += [
                self._hit(m.start("name"), m.end("name"), 0.7)
                for m in speakers
                if not has_common_word(m.group("name"))
            ]
        out += [self._hit(s, e, 0.7) for s, e in script_names(text)]
        if "\n" in text:
            out += [self._hit(s, e, 0.75) for s, e in table_names(text)]
        out += [
            self._hit(m.start("name"), m.end("name"), 0.7)
            for m in _POSSESSIVE_SIGNATURE.finditer(text)
            if m.group("name").split()[0] in self.lexicon and not has_common_word(m.group("name"))
        ]
        if _NAME_FIELD.search(field.rsplit(".", 1)[-1]):
            stripped = text.strip()
            if re.fullmatch(_NAME, stripped):
                start = text.index(stripped)
                out.append(self._hit(start, start + len(stripped), 0.8))
        return out + self._lexicon_names(text) if self.lexicon else out

    def _lexicon_names(self, text: str) -> list[Finding]:
        """Names found by the first-name lexicon alone: a frequent first name inside a sentence
        or after an elided article, a first name and surnames, a chat speaker, a field."""
        out, freq = [], _name_frequencies()
        for pattern in (_LONE_NAME, _ELIDED):
            for m in pattern.finditer(text):
                name, prev = m.group("name"), text[max(0, m.start() - 30) : m.start()].split()
                if pattern is _LONE_NAME and prev and prev[-1][0].isupper():  # "Big Ben"
                    continue
                if freq.get(name, 0) >= _LONE_MIN_FREQUENCY and name in self.lexicon:
                    start = m.start("name")
                    if not after_article(text, start) and not has_common_word(name):
                        if not after_place_word(text, start):
                            out.append(self._hit(start, m.end("name"), 0.6))
        for pattern, group in ((_LEXICON_NAME, None), (_SPEAKER, "first"), (_FIELD_SEP, "name")):
            for m in pattern.finditer(text):
                span = m.group(group) if group else m.group()
                if span.split()[0] in self.lexicon and not has_common_word(span):
                    if not after_place_word(text, m.start(group or 0)):
                        out.append(self._hit(m.start(group or 0), m.end(group or 0), 0.7))
        return out
